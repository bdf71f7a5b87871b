//! Embeds the web console's built files (`console/dist`, committed; rebuilt from `console/` by
//! `npm run build`) into the node: writes `$OUT_DIR/console_files.rs`, a table of
//! `(path, bytes)` served by `src/console.rs`.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, root, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../../console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if let Err(e) = walk(&dist, &dist, &mut files) {
        panic!(
            "the web console's build is missing ({}: {e}); it is committed in console/dist: \
             restore it with `git checkout console/dist`, or rebuild it with \
             `cd console && npm ci && npm run build`",
            dist.display()
        );
    }
    if !files.iter().any(|(p, _)| p == "index.html") {
        panic!(
            "{} has no index.html; rebuild the console with `cd console && npm ci && npm run build`",
            dist.display()
        );
    }
    files.sort();
    let mut code = String::from("/// The console's files: path under `/console/`, contents.\n");
    code.push_str("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::write(out.join("console_files.rs"), code) {
        panic!("cannot write {}: {e}", out.display());
    }
}
