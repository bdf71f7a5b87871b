//! What the developer sees: progress steps on stderr and the app's logs, in colour when stderr
//! is a terminal (none when it is not, or when `NO_COLOR` is set; `anstream` decides).

use anstyle::{AnsiColor, Style};

/// Style of a step's verb (`build`, `deploy`).
pub const STEP: Style = AnsiColor::Green.on_default().bold();
/// Style of a warning.
pub const WARN: Style = AnsiColor::Yellow.on_default().bold();
/// Style of an error.
pub const ERROR: Style = AnsiColor::Red.on_default().bold();
/// Style of an app's name in log lines.
pub const APP: Style = AnsiColor::Cyan.on_default().bold();
/// Style of secondary text (request ids, timings).
pub const DIM: Style = Style::new().dimmed();

/// Prints a progress step: `   build hello (cargo build …)` on stderr.
pub fn step(verb: &str, what: &str) {
    anstream::eprintln!("{STEP}{verb:>9}{STEP:#} {what}");
}

/// Prints a warning on stderr.
pub fn warn(what: &str) {
    anstream::eprintln!("{WARN}  warning{WARN:#} {what}");
}

/// Prints an error on stderr (the command goes on: used while `zero up` watches).
pub fn error(what: &str) {
    anstream::eprintln!("{ERROR}    error{ERROR:#} {what}");
}

/// A size for people: `512 B`, `12.3 KiB`, `4.5 MiB`.
pub fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

/// Seconds for people: `0.42s`.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Renders one JSON log line of the node for the developer: an app's output as
/// `[app] text`, requests as `[app] GET /path 200 1.2ms`, the node's warnings and errors as
/// themselves; `None` for what a developer need not see (the node's routine info lines).
pub fn render_node_log(line: &str) -> Option<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_string());
    };
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let level = s("level");
    let target = s("target");
    let app = s("app");
    let message = s("message");
    let rid = s("request_id");
    let tag = if app.is_empty() || app == "-" {
        format!("{DIM}[node]{DIM:#}")
    } else {
        format!("{APP}[{app}]{APP:#}")
    };
    match target.as_str() {
        "guest" => {
            let text = if v["stream"] == "stderr" {
                format!("{ERROR}{message}{ERROR:#}")
            } else {
                message
            };
            Some(format!("{tag} {text}"))
        }
        "access" => {
            let status = v["status"].as_u64().unwrap_or(0);
            let style = match status {
                500.. => ERROR,
                400..500 => WARN,
                _ => STEP,
            };
            let ms = v["duration_ms"].as_f64().unwrap_or(0.0);
            Some(format!(
                "{tag} {} {} {style}{status}{style:#} {DIM}{ms:.1}ms {rid}{DIM:#}",
                s("method"),
                s("path")
            ))
        }
        _ => {
            let style = match level.as_str() {
                "ERROR" => ERROR,
                "WARN" => WARN,
                _ => return None,
            };
            let mut extra = String::new();
            if let Some(map) = v.as_object() {
                for (k, val) in map {
                    if matches!(
                        k.as_str(),
                        "level" | "target" | "message" | "timestamp" | "app" | "tenant"
                    ) {
                        continue;
                    }
                    let val = val.as_str().map(str::to_string).unwrap_or(val.to_string());
                    extra.push_str(&format!(" {DIM}{k}={val}{DIM:#}"));
                }
            }
            Some(format!("{tag} {style}{message}{style:#}{extra}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> String {
        anstream::adapter::strip_str(s).to_string()
    }

    #[test]
    fn node_log_lines_render_for_the_developer() {
        let guest = r#"{"level":"INFO","target":"guest","tenant":"dev","app":"hello","request_id":"r1","stream":"stdout","message":"hi there"}"#;
        assert_eq!(plain(&render_node_log(guest).unwrap()), "[hello] hi there");
        let access = r#"{"level":"INFO","target":"access","tenant":"dev","app":"hello","request_id":"r1","method":"GET","path":"/x","status":404,"duration_ms":1.25,"message":"request"}"#;
        assert_eq!(
            plain(&render_node_log(access).unwrap()),
            "[hello] GET /x 404 1.2ms r1"
        );
        let routine = r#"{"level":"INFO","target":"zerocore","message":"loaded"}"#;
        assert_eq!(render_node_log(routine), None);
        let warn = r#"{"level":"WARN","target":"zerofs","app":"hello","fault":"trap","message":"guest trapped"}"#;
        assert_eq!(
            plain(&render_node_log(warn).unwrap()),
            "[hello] guest trapped fault=trap"
        );
        assert_eq!(render_node_log("not json").as_deref(), Some("not json"));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(12), "12 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(3 << 20), "3.0 MiB");
    }
}
