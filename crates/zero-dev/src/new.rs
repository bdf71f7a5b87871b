//! `zero new NAME [--template http|todo|cron]`: a project that builds. It writes `Cargo.toml`
//! (a `cdylib` depending on `zerosdk` by path), `src/lib.rs` from the template, `zero.toml` and
//! `.gitignore`, and copies the SDK embedded in this binary (`guest/zerosdk` and
//! `guest/zerosdk-macros`) into `.zero/sdk/`: of the new project, or of the enclosing cargo
//! workspace when NAME is created inside one (which then gets NAME as a member).

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use include_dir::{Dir, include_dir};

use crate::ui;

static SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../guest/zerosdk");
static SDK_MACROS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../guest/zerosdk-macros");
/// The guest workspace's lock file: a standalone project starts from the dependency versions
/// the SDK is tested with.
static GUEST_LOCK: &str = include_str!("../../../guest/Cargo.lock");

/// What the new project does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `Hello, World!` on `/`.
    Http,
    /// A JSON todo API over zerodb on `/todos`.
    Todo,
    /// A schedule tick counted in the cache, and a page showing the count.
    Cron,
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> Result<Template, String> {
        match s {
            "http" => Ok(Template::Http),
            "todo" => Ok(Template::Todo),
            "cron" => Ok(Template::Cron),
            other => Err(format!(
                "there is no template `{other}`: choose http, todo or cron"
            )),
        }
    }
}

impl Template {
    fn lib_rs(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/http/lib.rs"),
            Template::Todo => include_str!("../templates/todo/lib.rs"),
            Template::Cron => include_str!("../templates/cron/lib.rs"),
        }
    }

    fn zero_toml(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/http/zero.toml"),
            Template::Todo => include_str!("../templates/todo/zero.toml"),
            Template::Cron => include_str!("../templates/cron/zero.toml"),
        }
    }
}

/// The nearest directory at or above `start` whose `Cargo.toml` has a `[workspace]` table.
pub fn enclosing_workspace(start: &Path) -> Option<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        let toml_path = d.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&toml_path)
            && let Ok(t) = text.parse::<toml::Table>()
            && t.contains_key("workspace")
        {
            return Some(d.to_path_buf());
        }
        dir = d.parent();
    }
    None
}

fn write_dir(dir: &Dir<'_>, to: &Path) -> anyhow::Result<()> {
    for f in dir.files() {
        let p = to.join(f.path());
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, f.contents())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    for d in dir.dirs() {
        write_dir(d, to)?;
    }
    Ok(())
}

/// Writes (or refreshes) the embedded SDK under `root/.zero/sdk/`; returns that directory.
pub fn write_sdk(root: &Path) -> anyhow::Result<PathBuf> {
    let sdk = root.join(".zero").join("sdk");
    for (name, dir) in [("zerosdk", &SDK), ("zerosdk-macros", &SDK_MACROS)] {
        let to = sdk.join(name);
        if to.exists() {
            std::fs::remove_dir_all(&to)
                .with_context(|| format!("cannot replace {}", to.display()))?;
        }
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        write_dir(dir, &to)?;
    }
    Ok(sdk)
}

fn valid_package_name(name: &str) -> bool {
    zero_manifest::valid_name(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The path from `from` (a directory) to `to`, both absolute, with `/` separators.
fn relative_path(from: &Path, to: &Path) -> String {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), f.len() - common).collect();
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn add_member(workspace: &Path, member: &str) -> anyhow::Result<bool> {
    let path = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let ws = doc["workspace"]
        .as_table_mut()
        .ok_or_else(|| anyhow::anyhow!("{}: [workspace] is not a table", path.display()))?;
    let members = ws
        .entry("members")
        .or_insert(toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .ok_or_else(|| {
            anyhow::anyhow!("{}: [workspace] members is not an array", path.display())
        })?;
    let covered = members.iter().filter_map(|m| m.as_str()).any(|m| {
        m == member
            || m.strip_suffix("/*")
                .is_some_and(|dir| Path::new(member).parent() == Some(Path::new(dir)))
    });
    if covered {
        return Ok(false);
    }
    members.push(member);
    std::fs::write(&path, doc.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// Creates project `name` in `parent` from `template`; returns its directory.
pub fn new_project(parent: &Path, name: &str, template: Template) -> anyhow::Result<PathBuf> {
    if !valid_package_name(name) {
        anyhow::bail!(
            "`{name}` cannot name an app: use 1 to 63 characters of a-z, 0-9, `-` and `_`, starting with a letter"
        );
    }
    let parent = parent
        .canonicalize()
        .with_context(|| format!("cannot open {}", parent.display()))?;
    let dir = parent.join(name);
    if dir.exists() {
        anyhow::bail!(
            "{} already exists: choose another name, or remove it first",
            dir.display()
        );
    }
    let workspace = enclosing_workspace(&parent);
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let sdk_root = workspace.clone().unwrap_or_else(|| dir.clone());
    let sdk = write_sdk(&sdk_root)?;
    let sdk_path = relative_path(&dir, &sdk.join("zerosdk"));

    let mut cargo = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A component: `zero build` compiles it for wasm32-wasip2 and signs it as {name}.zero.wasm.\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\n\
         # The zerocore SDK, copied here by `zero new`.\n\
         zerosdk = {{ path = \"{sdk_path}\" }}\n"
    );
    let mut gitignore = String::from("*.zero.wasm\n");
    if workspace.is_none() {
        cargo.push_str(
            "\n# Small components that build quickly.\n[profile.release]\nopt-level = \"s\"\nstrip = true\n\n\
             # Its own workspace: not part of any cargo workspace above it.\n[workspace]\n",
        );
        gitignore = "/target\n/.zero/up\n*.zero.wasm\n".into();
        std::fs::write(dir.join("Cargo.lock"), GUEST_LOCK).context("cannot write Cargo.lock")?;
    }
    std::fs::write(dir.join("Cargo.toml"), cargo).context("cannot write Cargo.toml")?;
    std::fs::write(dir.join(".gitignore"), gitignore).context("cannot write .gitignore")?;
    std::fs::write(
        dir.join("src/lib.rs"),
        template.lib_rs().replace("{{name}}", name),
    )
    .context("cannot write src/lib.rs")?;
    std::fs::write(
        dir.join("zero.toml"),
        template.zero_toml().replace("{{name}}", name),
    )
    .context("cannot write zero.toml")?;
    if let Some(ws) = &workspace {
        let member = relative_path(ws, &dir);
        if add_member(ws, &member)? {
            ui::step(
                "added",
                &format!(
                    "{member} to the members of the workspace at {}",
                    ws.display()
                ),
            );
        }
        let up = ws.join(".gitignore");
        let existing = std::fs::read_to_string(&up).unwrap_or_default();
        if !existing.lines().any(|l| l.trim() == "/.zero/up") {
            let sep = if existing.is_empty() || existing.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            std::fs::write(&up, format!("{existing}{sep}/.zero/up\n"))
                .with_context(|| format!("cannot write {}", up.display()))?;
        }
    }
    ui::step(
        "created",
        &format!(
            "{} (SDK in {}); next: cd {name} && zero up",
            dir.display(),
            sdk.display()
        ),
    );
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_directories() {
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b/.zero/sdk")),
            ".zero/sdk"
        );
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/.zero")),
            "../../.zero"
        );
    }

    #[test]
    fn templates_parse_as_manifests() {
        for t in [Template::Http, Template::Todo, Template::Cron] {
            let text = t.zero_toml().replace("{{name}}", "x");
            zero_manifest::Manifest::parse(&text, Path::new("/p/zero.toml"))
                .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        assert!(
            "nope"
                .parse::<Template>()
                .unwrap_err()
                .contains("http, todo or cron")
        );
    }

    #[test]
    fn a_project_inside_a_workspace_joins_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("Cargo.toml"),
            "# my mono-repo\n[workspace]\nresolver = \"2\"\nmembers = [\"libs/*\"]\n",
        )
        .unwrap();
        std::fs::create_dir(tmp.path().join("apps")).unwrap();
        let dir = new_project(&tmp.path().join("apps"), "one", Template::Http).unwrap();
        let ws = std::fs::read_to_string(tmp.path().join("Cargo.toml")).unwrap();
        assert!(ws.starts_with("# my mono-repo\n"), "{ws}");
        assert!(ws.contains("\"apps/one\""), "{ws}");
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("path = \"../../.zero/sdk/zerosdk\""),
            "{cargo}"
        );
        assert!(!cargo.contains("[workspace]"), "{cargo}");
        assert!(tmp.path().join(".zero/sdk/zerosdk/Cargo.toml").exists());
        assert!(
            tmp.path()
                .join(".zero/sdk/zerosdk-macros/Cargo.toml")
                .exists()
        );
        // The SDK's `wit` link is copied as files.
        let wit = tmp.path().join(".zero/sdk/zerosdk/wit");
        assert!(
            !wit.is_symlink() && wit.join("zero-db").is_dir(),
            "{}",
            wit.display()
        );
        // A second app does not add itself twice, nor break the first.
        let err = new_project(&tmp.path().join("apps"), "one", Template::Http).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let e = new_project(tmp.path(), "Bad", Template::Http).unwrap_err();
        assert!(e.to_string().contains("cannot name an app"), "{e}");
    }
}
