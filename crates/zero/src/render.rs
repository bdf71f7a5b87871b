//! Human output of the CLI: file listings, query results as text tables, and chains.

use zero_auth::Delegation;

/// Renders the answer of [`zero_client::Client::fs_list`] as `ls -l`-like lines: kind, size, name.
pub fn format_listing(answer: &serde_json::Value) -> Vec<String> {
    let line = |e: &serde_json::Value| {
        let dir = e["kind"] == "directory";
        format!(
            "{} {:>12}  {}{}",
            if dir { "d" } else { "-" },
            e["size"].as_u64().unwrap_or(0),
            e["name"].as_str().unwrap_or(""),
            if dir { "/" } else { "" }
        )
    };
    match answer["entry"]["kind"].as_str() {
        Some("file") => vec![line(&answer["entry"])],
        _ => answer["entries"]
            .as_array()
            .map(|a| a.iter().map(line).collect())
            .unwrap_or_default(),
    }
}

/// Renders a `zero tls list` answer as aligned columns: host, tenant, expiry (UTC), days left,
/// SHA-256 fingerprint and whether the node serves it (with the reason when not).
pub fn format_certificates(v: &serde_json::Value) -> Vec<String> {
    let certs = v["certificates"].as_array().cloned().unwrap_or_default();
    if certs.is_empty() {
        return vec!["no certificates".to_string()];
    }
    let s = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or("-").to_string();
    let mut rows = vec![[
        "HOST".to_string(),
        "TENANT".to_string(),
        "NOT_AFTER".to_string(),
        "DAYS".to_string(),
        "SHA256".to_string(),
        "SERVED".to_string(),
    ]];
    for c in &certs {
        let served = if c["served"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            format!("no: {}", s(c, "reason"))
        };
        rows.push([
            s(c, "host"),
            s(c, "tenant"),
            s(c, "not_after"),
            c["days_left"]
                .as_u64()
                .map_or("-".to_string(), |d| d.to_string()),
            s(c, "sha256"),
            served,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}

/// Renders a `db_query` answer for a terminal: an aligned table of the rows when the statement
/// returned columns, otherwise `N rows affected`.
pub fn format_query_result(v: &serde_json::Value) -> String {
    let cell = |c: &serde_json::Value| match c {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("hex").and_then(|h| h.as_str()) {
            Some(h) => format!("x'{h}'"),
            None => c.to_string(),
        },
        other => other.to_string(),
    };
    let columns: Vec<String> = v["columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    if columns.is_empty() {
        let n = v["rows_affected"].as_u64().unwrap_or(0);
        return format!("{n} row{} affected", if n == 1 { "" } else { "s" });
    }
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| r.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&columns)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for r in &rows {
        out.push(line(r));
    }
    out.push(format!(
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out.join("\n")
}

/// A human-readable description of a chain (for `zero inspect` and `zero grant`).
pub fn describe_chain(chain: &[Delegation]) -> Vec<String> {
    chain
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let exp = match d.expiration() {
                Some(e) => format!("expires {e} (unix)"),
                None => "never expires".into(),
            };
            format!(
                "{}. {} -> {}\n     cmd {}  policy {}  {exp}\n     cid {}",
                i + 1,
                d.issuer(),
                d.audience(),
                d.command(),
                d.policy(),
                d.cid()
            )
        })
        .collect()
}

/// A component's capabilities, as `zero inspect` prints them: each capability (its leaf's
/// command and policy), then its chain (see [`describe_chain`]).
pub fn describe_chains(chains: &[Vec<Delegation>]) -> Vec<String> {
    let mut out = Vec::new();
    let n = chains.len();
    for (i, chain) in chains.iter().enumerate() {
        if let Some(leaf) = chain.last() {
            out.push(format!(
                "capability {} of {n}: {} {}",
                i + 1,
                leaf.command(),
                leaf.policy()
            ));
        }
        out.push(if n == 1 {
            "capabilities (ucan chain, root first):".to_owned()
        } else {
            "  its ucan chain, root first:".to_owned()
        });
        let indent = if n == 1 { "  " } else { "    " };
        out.extend(
            describe_chain(chain)
                .into_iter()
                .map(|l| format!("{indent}{l}")),
        );
    }
    out
}

/// Renders one line of a log or event stream ([`zero_client::Client::stream_logs`]) for a
/// terminal: `app request-id what`, by kind.
pub fn format_log_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    match v["kind"].as_str().unwrap_or("") {
        "guest" => format!(
            "{} {} {}: {}",
            s("app"),
            s("request_id"),
            s("stream"),
            s("message")
        ),
        "access" => format!(
            "{} {} {} {} {} {:.1}ms {}",
            s("app"),
            s("request_id"),
            s("method"),
            s("path"),
            v["status"],
            v["duration_ms"].as_f64().unwrap_or(0.0),
            s("outcome")
        ),
        "fault" => format!(
            "{} {} FAULT {}: {}",
            s("app"),
            s("request_id"),
            s("fault"),
            s("message")
        ),
        "dropped" => format!("-- {}", s("message")),
        "event" => {
            let mut rest = v.clone();
            if let Some(m) = rest.as_object_mut() {
                for k in ["kind", "event", "ts_ms"] {
                    m.remove(k);
                }
            }
            format!("{} {rest}", s("event"))
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_results_render_as_aligned_tables_or_counts() {
        let v = serde_json::json!({
            "columns": ["id", "title"],
            "rows": [[1, "milk"], [10, null], [2, {"hex": "00ff"}]],
            "rows_affected": 0,
        });
        let text = format_query_result(&v);
        assert_eq!(
            text,
            "id | title\n---+--------\n1  | milk\n10 | NULL\n2  | x'00ff'\n(3 rows)"
        );
        let w = serde_json::json!({"columns": [], "rows": [], "rows_affected": 1});
        assert_eq!(format_query_result(&w), "1 row affected");
        let w = serde_json::json!({"columns": [], "rows": [], "rows_affected": 3});
        assert_eq!(format_query_result(&w), "3 rows affected");
    }
}
