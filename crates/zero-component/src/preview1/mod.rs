//! zerocore's own preview1 shim: the five `wasi_snapshot_preview1` functions that the standard
//! adapter does not run as a native preview1 runtime does.
//!
//! - `proc_exit(n)`: the standard adapter reports any `n != 0` as `wasi:cli/exit.exit(err)`,
//!   which carries no code (the host sees 1). The shim calls `wasi:cli/exit.exit-with-code(n)`
//!   (WASI 0.2.12), so 3 stays 3.
//! - `args_sizes_get`, `args_get`, `environ_sizes_get`, `environ_get`: the standard adapter keeps
//!   its state in a page it takes with `memory.grow` on its first call. A program whose allocator
//!   claims all memory up to `memory.size` when it starts (AssemblyScript's) and that asks for its
//!   arguments before allocating anything hands that page to its allocator, which overwrites the
//!   adapter's state: the adapter's canary check fails (`assertion failed at adapter line …`).
//!   The shim keeps no state in memory: each call lowers the host's list into fresh pages and
//!   copies it out into the caller's buffers before returning.
//!
//! [`route_to_shim`] rewrites a core module's imports of these functions to the import module
//! [`SHIM_MODULE`]; [`shim_module`] is the shim itself (`shim.wat` with the component-type section
//! made from `shim.wit`), given to wit-component as an adapter for that module name.

use std::sync::OnceLock;

use wasmparser::{Parser, Payload};

/// The import module name that the shim answers for.
pub const SHIM_MODULE: &str = "zerocore_preview1";

/// The preview1 functions the shim provides instead of the standard adapter.
pub const SHIMMED: &[&str] = &[
    "proc_exit",
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
];

const PREVIEW1: &str = "wasi_snapshot_preview1";
const SHIM_WAT: &str = include_str!("shim.wat");
const SHIM_WIT: &str = include_str!("shim.wit");
const WASI_CLI_WIT: &str = include_str!("wasi-cli.wit");

/// The shim as a core module with its `component-type` section, built once.
pub fn shim_module() -> anyhow::Result<&'static [u8]> {
    static SHIM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    SHIM.get_or_init(|| build_shim().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("zerocore's preview1 shim does not build: {e}"))
}

fn build_shim() -> anyhow::Result<Vec<u8>> {
    let mut module = wat::parse_str(SHIM_WAT)?;
    let mut resolve = wit_parser::Resolve::default();
    resolve.push_source("wasi-cli.wit", WASI_CLI_WIT)?;
    let package = resolve.push_source("shim.wit", SHIM_WIT)?;
    let world = resolve.select_world(&[package], Some("shim"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    Ok(module)
}

/// Returns a copy of `module` whose `wasi_snapshot_preview1` imports of the [`SHIMMED`]
/// functions come from [`SHIM_MODULE`] instead, and whether any import was moved. Only the
/// import section changes; the imports keep their order, so no index moves.
pub fn route_to_shim(module: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
    let mut section = None;
    for payload in Parser::new(0).parse_all(module) {
        match payload? {
            Payload::ImportSection(reader) => {
                section = Some(reader);
                break;
            }
            // Sections come in order: once past the imports there are none.
            Payload::FunctionSection(_) | Payload::CodeSectionStart { .. } => break,
            _ => {}
        }
    }
    let Some(reader) = section else {
        return Ok((module.to_vec(), false));
    };
    let payload = reader.range();
    let mut imports = wasm_encoder::ImportSection::new();
    let mut moved = false;
    for import in reader.into_imports() {
        let import = import?;
        if import.module == SHIM_MODULE {
            anyhow::bail!(
                "the module imports `{}` from `{SHIM_MODULE}`, a module name that `zero convert` \
                 keeps for its own preview1 shim; rename that import module",
                import.name
            );
        }
        let shimmed = import.module == PREVIEW1 && SHIMMED.contains(&import.name);
        moved |= shimmed;
        let from = if shimmed { SHIM_MODULE } else { import.module };
        imports.import(
            from,
            import.name,
            wasm_encoder::EntityType::try_from(import.ty).map_err(|e| {
                anyhow::anyhow!(
                    "import `{}::{}` has a type this tool cannot copy: {e}",
                    import.module,
                    import.name
                )
            })?,
        );
    }
    if !moved {
        return Ok((module.to_vec(), false));
    }
    // The whole section (its id and size, then the payload) is replaced.
    let mut whole = None;
    crate::for_each_top_level_section(module, |id, range, data| {
        if id == wasm_encoder::SectionId::Import as u8 && data == payload {
            whole = Some(range);
        }
        Ok(())
    })?;
    let whole = whole.ok_or_else(|| anyhow::anyhow!("the import section was not found again"))?;
    let mut out = Vec::with_capacity(module.len() + 64);
    out.extend_from_slice(&module[..whole.start]);
    out.push(wasm_encoder::SectionId::Import as u8);
    wasm_encoder::Encode::encode(&imports, &mut out);
    out.extend_from_slice(&module[whole.end..]);
    Ok((out, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    fn imports(bytes: &[u8]) -> Vec<String> {
        crate::inspect(bytes, "m").unwrap().imports
    }

    #[test]
    fn the_shim_builds_and_is_valid_wasm() {
        let shim = shim_module().unwrap();
        wasmparser::Validator::new().validate_all(shim).unwrap();
        let info = crate::inspect(shim, "shim").unwrap();
        assert!(info.custom_sections.iter().any(|s| s == "component-type"));
        for f in SHIMMED.iter().chain(&["cabi_import_realloc"]) {
            assert!(info.exports.iter().any(|e| e == f), "{f}");
        }
    }

    #[test]
    fn only_the_shimmed_preview1_imports_move() {
        let m = module(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "args_get" (func (param i32 i32) (result i32)))
                (import "other" "proc_exit" (func (param i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call 3 (i32.const 0))))"#,
        );
        let (out, moved) = route_to_shim(&m).unwrap();
        assert!(moved);
        wasmparser::Validator::new().validate_all(&out).unwrap();
        assert_eq!(
            imports(&out),
            [
                "wasi_snapshot_preview1::fd_write",
                "zerocore_preview1::args_get",
                "other::proc_exit",
                "zerocore_preview1::proc_exit",
            ]
        );
        // Everything after the import section is byte for byte the same.
        assert!(m.ends_with(&out[out.len() - 20..]));
    }

    #[test]
    fn a_module_without_those_imports_is_unchanged() {
        let m = module(
            r#"(module (import "wasi_snapshot_preview1" "fd_write"
                 (func (param i32 i32 i32 i32) (result i32))))"#,
        );
        assert_eq!(route_to_shim(&m).unwrap(), (m.clone(), false));
        let none = module("(module)");
        assert_eq!(route_to_shim(&none).unwrap(), (none.clone(), false));
    }

    #[test]
    fn a_module_importing_the_shims_name_is_refused() {
        let m = module(
            r#"(module (import "zerocore_preview1" "cabi_import_realloc"
                 (func (param i32 i32 i32 i32) (result i32))))"#,
        );
        let err = route_to_shim(&m).unwrap_err().to_string();
        assert!(
            err.contains("zerocore_preview1") && err.contains("rename"),
            "{err}"
        );
    }

    #[test]
    fn a_converted_command_imports_exit_with_code_and_nothing_of_ours() {
        let m = module(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call 0 (i32.const 3))))"#,
        );
        let (component, kind) = crate::convert(&m, "m.wasm", None).unwrap();
        assert_eq!(kind, crate::AdapterKind::Command);
        let info = crate::inspect(&component, "c").unwrap();
        assert!(
            info.imports.iter().any(|i| i == "wasi:cli/exit@0.2.12"),
            "{:?}",
            info.imports
        );
        assert!(
            info.imports.iter().all(|i| i.starts_with("wasi:")),
            "{:?}",
            info.imports
        );
        // A module that only uses the shim needs no standard adapter at all.
        let only = module(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call 0 (i32.const 3))))"#,
        );
        let (component, _) = crate::convert(&only, "only.wasm", None).unwrap();
        let info = crate::inspect(&component, "c").unwrap();
        assert_eq!(info.imports, ["wasi:cli/exit@0.2.12"]);
    }

    #[test]
    fn reactors_use_the_shim_and_proxies_do_not() {
        let m = module(
            r#"(module
                (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func (export "f") (result i32) (call 0 (i32.const 0) (i32.const 4))))"#,
        );
        let (reactor, kind) = crate::convert(&m, "r.wasm", None).unwrap();
        assert_eq!(kind, crate::AdapterKind::Reactor);
        let info = crate::inspect(&reactor, "r").unwrap();
        assert!(
            info.imports
                .iter()
                .any(|i| i == "wasi:cli/environment@0.2.12"),
            "{:?}",
            info.imports
        );
        // The proxy world has no wasi:cli/environment: the standard proxy adapter answers
        // args_sizes_get itself.
        let (proxy, _) = crate::convert(&m, "p.wasm", Some(crate::AdapterKind::Proxy)).unwrap();
        let info = crate::inspect(&proxy, "p").unwrap();
        assert!(
            !info
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:cli/environment")),
            "{:?}",
            info.imports
        );
    }
}
