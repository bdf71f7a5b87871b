//! Component tooling for zerocore: telling components from core modules, converting core modules
//! into components, inspecting a binary's imports and exports, and computing the content hash
//! that identifies a component everywhere in the platform.
//!
//! The node (`zerocore`) calls [`expect_component`] before compiling anything, so that a core module
//! or a file that is not WebAssembly at all is refused with directions instead of an opaque
//! compiler error. The `zero` CLI exposes [`convert`] and [`inspect`] as `zero convert` and
//! `zero inspect`.
//!
//! The content hash ([`content_hash`]) is SHA-256 over the binary with any custom section named
//! [`UCAN_SECTION`] removed, so that signing a component (which adds that section) does not change
//! its identity, and a token bound to one hash cannot be reused with other code.

#![deny(missing_docs)]

use std::fmt;
use std::ops::Range;

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

pub mod preview1;

/// Name of the custom section that carries a component's capability token (a UCAN chain).
pub const UCAN_SECTION: &str = "ucan";

/// The WebAssembly magic number, `\0asm`.
pub const WASM_MAGIC: [u8; 4] = [0x00, 0x61, 0x73, 0x6d];

/// What a binary is, judged by its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A WebAssembly component (layer `01 00`).
    Component,
    /// A WebAssembly core module (layer `00 00`).
    CoreModule,
}

impl fmt::Display for WasmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WasmKind::Component => f.write_str("component"),
            WasmKind::CoreModule => f.write_str("core module"),
        }
    }
}

/// Why a binary could not be used where a component was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input is shorter than the 8-byte WebAssembly header.
    #[error(
        "not a WebAssembly binary: the input is {len} bytes long, shorter than the 8-byte WebAssembly header"
    )]
    TooShort {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The input does not start with the WebAssembly magic number.
    #[error(
        "not a WebAssembly binary: it starts with {found} instead of the magic number 00 61 73 6d (\"\\0asm\"); \
         build your app for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) and pass the resulting .wasm file"
    )]
    NotWasm {
        /// The first bytes found, as hex.
        found: String,
    },
    /// The header has the magic number but an unknown layer.
    #[error(
        "unknown WebAssembly layer {layer:#06x} in the header (expected 0x0001 for a component or 0x0000 for a core module)"
    )]
    UnknownLayer {
        /// The layer field found.
        layer: u16,
    },
    /// A core module was given where a component is required.
    #[error(
        "{what} is a WebAssembly core module, not a component. zerocore runs components only: \
         convert it with `zero convert {what} -o app.wasm` (it adds the WASI preview1 adapter), \
         or build for the wasm32-wasip2 target (`cargo build --target wasm32-wasip2`), which produces a component"
    )]
    CoreModule {
        /// How the caller named the input (usually a file name).
        what: String,
    },
    /// A component was given where a core module is required.
    #[error("{what} is already a component; `zero convert` takes a core module")]
    AlreadyComponent {
        /// How the caller named the input.
        what: String,
    },
    /// The binary could not be parsed.
    #[error("{what} is not valid WebAssembly: {reason}")]
    Invalid {
        /// How the caller named the input.
        what: String,
        /// The parser's description of the problem.
        reason: String,
    },
}

/// Reads the 8-byte header and says whether the binary is a component or a core module.
///
/// The two version bytes are ignored (they change before standardization); only the magic
/// number and the layer decide.
pub fn detect(bytes: &[u8]) -> Result<WasmKind, FormatError> {
    if bytes.len() < 8 {
        if bytes.len() >= 4 && bytes[..4] != WASM_MAGIC {
            return Err(FormatError::NotWasm {
                found: hex_prefix(bytes),
            });
        }
        return Err(FormatError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != WASM_MAGIC {
        return Err(FormatError::NotWasm {
            found: hex_prefix(bytes),
        });
    }
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match layer {
        1 => Ok(WasmKind::Component),
        0 => Ok(WasmKind::CoreModule),
        layer => Err(FormatError::UnknownLayer { layer }),
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let n = bytes.len().min(4);
    let mut s = bytes[..n]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    if n == 0 {
        s.push_str("(empty input)");
    }
    s
}

/// Checks that `bytes` is a component, with an error that explains what to do otherwise.
///
/// `what` names the input in messages (a file name or an app name).
pub fn expect_component(bytes: &[u8], what: &str) -> Result<(), FormatError> {
    match detect(bytes)? {
        WasmKind::Component => Ok(()),
        WasmKind::CoreModule => Err(FormatError::CoreModule {
            what: what.to_string(),
        }),
    }
}

/// A SHA-256 content hash of a component, computed without its [`UCAN_SECTION`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The hash as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:HEX` or bare `HEX` (64 hex digits).
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes =
            hex::decode(hex_part).map_err(|e| format!("content hash `{s}` is not hex: {e}"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            format!("content hash `{s}` must be 32 bytes (64 hex digits) of SHA-256")
        })?;
        Ok(ContentHash(arr))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A top-level custom section: its name and the byte range of the whole section (id, size and
/// payload) inside the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomSection {
    /// The section's name.
    pub name: String,
    /// Byte range of the entire section, header included.
    pub range: Range<usize>,
    /// Byte range of the section's payload (after the name).
    pub data: Range<usize>,
}

/// Lists the top-level custom sections of a module or component (nested modules and components
/// are not descended into).
pub fn custom_sections(bytes: &[u8]) -> Result<Vec<CustomSection>, FormatError> {
    let mut out = Vec::new();
    for_each_top_level_section(bytes, |id, range, payload| {
        if id == 0 {
            let mut reader = wasmparser::BinaryReader::new(&bytes[payload.clone()], payload.start);
            let name = reader.read_string().map_err(|e| e.to_string())?;
            let data_start = reader.original_position();
            out.push(CustomSection {
                name: name.to_string(),
                range,
                data: data_start..payload.end,
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// Walks the raw top-level sections: `f(section_id, whole_range, payload_range)`.
fn for_each_top_level_section(
    bytes: &[u8],
    mut f: impl FnMut(u8, Range<usize>, Range<usize>) -> Result<(), String>,
) -> Result<(), FormatError> {
    detect(bytes)?;
    let invalid = |reason: String| FormatError::Invalid {
        what: "the input".into(),
        reason,
    };
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let mut reader = wasmparser::BinaryReader::new(&bytes[pos..], pos);
        let size = reader
            .read_var_u32()
            .map_err(|e| invalid(format!("section at offset {start}: {e}")))?
            as usize;
        let payload_start = reader.original_position();
        let end = payload_start
            .checked_add(size)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                invalid(format!(
                    "section at offset {start} claims {size} bytes but the input ends at {}",
                    bytes.len()
                ))
            })?;
        f(id, start..end, payload_start..end).map_err(invalid)?;
        pos = end;
    }
    Ok(())
}

/// Returns a copy of `bytes` without any top-level custom section called `name`.
pub fn strip_custom_section(bytes: &[u8], name: &str) -> Result<Vec<u8>, FormatError> {
    let sections = custom_sections(bytes)?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    for s in sections.iter().filter(|s| s.name == name) {
        out.extend_from_slice(&bytes[pos..s.range.start]);
        pos = s.range.end;
    }
    out.extend_from_slice(&bytes[pos..]);
    Ok(out)
}

/// Appends a custom section to a module or component (the binary format allows custom sections
/// anywhere at top level).
pub fn append_custom_section(bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let section = wasm_encoder::CustomSection {
        name: name.into(),
        data: data.into(),
    };
    let mut out = bytes.to_vec();
    out.push(0); // the custom section id
    wasm_encoder::Encode::encode(&section, &mut out);
    out
}

/// The identity of a component: SHA-256 of its bytes with any [`UCAN_SECTION`] removed.
pub fn content_hash(bytes: &[u8]) -> Result<ContentHash, FormatError> {
    let sections = custom_sections(bytes)?;
    let mut hasher = Sha256::new();
    let mut pos = 0;
    for s in sections.iter().filter(|s| s.name == UCAN_SECTION) {
        hasher.update(&bytes[pos..s.range.start]);
        pos = s.range.end;
    }
    hasher.update(&bytes[pos..]);
    Ok(ContentHash(hasher.finalize().into()))
}

/// What `zero inspect` reports about a binary.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Component or core module.
    pub kind: WasmKind,
    /// Size in bytes.
    pub size: usize,
    /// Content hash (without the `ucan` section).
    pub hash: ContentHash,
    /// Top-level imports: WIT names such as `wasi:cli/environment@0.2.4` for components, or
    /// `module::name` for core modules.
    pub imports: Vec<String>,
    /// Top-level exports, named the same way.
    pub exports: Vec<String>,
    /// Names of the top-level custom sections.
    pub custom_sections: Vec<String>,
    /// The world the component targets, judged by its exports (see [`world`]).
    pub world: Option<World>,
    /// The WASI versions (`0.2`, `0.3`) of the `wasi:` interfaces it imports, sorted.
    pub wasi_imports: Vec<String>,
}

/// The world a component targets, recognised by the export that world's runner calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// The world, e.g. `wasi:http/service` (WASI 0.3) or `wasi:http/proxy` (WASI 0.2).
    pub name: &'static str,
    /// The WASI version of that export, e.g. `0.3.0`.
    pub wasi: String,
}

/// The exports that identify a world: (interface, world, WASI minor version prefix).
const WORLDS: &[(&str, &str, &str)] = &[
    ("wasi:http/handler", "wasi:http/service", "0.3."),
    ("wasi:http/incoming-handler", "wasi:http/proxy", "0.2."),
    ("wasi:cli/run", "wasi:cli/command", "0.3."),
    ("wasi:cli/run", "wasi:cli/command", "0.2."),
];

/// The world a component with these top-level `exports` targets: `wasi:http/service` for
/// `wasi:http/handler@0.3.x`, `wasi:http/proxy` for `wasi:http/incoming-handler@0.2.x`,
/// `wasi:cli/command` for `wasi:cli/run`; `None` for anything else.
pub fn world(exports: &[String]) -> Option<World> {
    WORLDS.iter().find_map(|(interface, name, prefix)| {
        exports.iter().find_map(|e| {
            let (i, version) = e.split_once('@')?;
            (i == *interface && version.starts_with(prefix)).then(|| World {
                name,
                wasi: version.to_string(),
            })
        })
    })
}

/// The distinct WASI versions, as `major.minor` (`0.2`, `0.3`), of the `wasi:` names in
/// `names`, sorted.
pub fn wasi_versions(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("wasi:"))
        .filter_map(|n| {
            let (_, version) = n.split_once('@')?;
            let mut parts = version.splitn(3, '.');
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Parses a binary and lists what it imports and exports.
pub fn inspect(bytes: &[u8], what: &str) -> Result<Inspection, FormatError> {
    let kind = detect(bytes)?;
    let invalid = |e: wasmparser::BinaryReaderError| FormatError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    };
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::ImportSection(reader) if depth == 1 => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    imports.push(format!("{}::{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export.map_err(invalid)?.name.to_string());
                }
            }
            _ => {}
        }
    }
    let custom_sections = custom_sections(bytes)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    Ok(Inspection {
        kind,
        size: bytes.len(),
        hash: content_hash(bytes)?,
        world: world(&exports),
        wasi_imports: wasi_versions(&imports),
        imports,
        exports,
        custom_sections,
    })
}

/// Which WASI preview1 adapter to use when turning a core module into a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A program with `_start`: the component exports `wasi:cli/run`.
    Command,
    /// A library-like module without `_start`.
    Reactor,
    /// An HTTP handler: only the `wasi:http/proxy` world's imports are available.
    Proxy,
}

impl AdapterKind {
    /// The adapter module's bytes (from the adapter matching our wasmtime version).
    pub fn adapter_bytes(self) -> &'static [u8] {
        use wasi_preview1_component_adapter_provider as p;
        match self {
            AdapterKind::Command => p::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            AdapterKind::Reactor => p::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            AdapterKind::Proxy => p::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        }
    }

    /// Picks the adapter from the module's exports: `_start` means a command, an exported
    /// `wasi:http/incoming-handler` means a proxy, anything else a reactor.
    pub fn infer(exports: &[String]) -> AdapterKind {
        if exports.iter().any(|e| e == "_start") {
            AdapterKind::Command
        } else if exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler"))
        {
            AdapterKind::Proxy
        } else {
            AdapterKind::Reactor
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdapterKind::Command => "command",
            AdapterKind::Reactor => "reactor",
            AdapterKind::Proxy => "proxy",
        })
    }
}

impl std::str::FromStr for AdapterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "command" => Ok(AdapterKind::Command),
            "reactor" => Ok(AdapterKind::Reactor),
            "proxy" => Ok(AdapterKind::Proxy),
            other => Err(format!(
                "unknown adapter `{other}`: use command, reactor or proxy"
            )),
        }
    }
}

/// Errors from [`convert`].
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input is not a core module.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// wit-component refused the module.
    #[error("could not turn {what} into a component with the {adapter} adapter: {reason:#}")]
    Encode {
        /// How the caller named the input.
        what: String,
        /// The adapter that was used.
        adapter: AdapterKind,
        /// wit-component's error.
        reason: anyhow::Error,
    },
}

/// Turns a core module (for example one built for wasm32-wasip1) into a component, adding the
/// `wasi_snapshot_preview1` adapter when the module imports WASI preview1.
///
/// For a command or a reactor, the module's `proc_exit`, `args_*` and `environ_*` imports are
/// answered by zerocore's own shim ([`preview1`]) instead of the standard adapter, so that exit
/// codes pass through (`wasi:cli/exit.exit-with-code`) and programs whose allocator starts by
/// claiming all of memory (AssemblyScript) can read their arguments and environment. The proxy
/// world has neither `wasi:cli/exit` nor `wasi:cli/environment`: a proxy keeps the standard
/// adapter for every function.
///
/// `adapter` forces the adapter variant; `None` infers it with [`AdapterKind::infer`]. Returns
/// the component and the adapter used.
pub fn convert(
    module: &[u8],
    what: &str,
    adapter: Option<AdapterKind>,
) -> Result<(Vec<u8>, AdapterKind), ConvertError> {
    match detect(module)? {
        WasmKind::CoreModule => {}
        WasmKind::Component => {
            return Err(FormatError::AlreadyComponent {
                what: what.to_string(),
            }
            .into());
        }
    }
    let info = inspect(module, what)?;
    let kind = adapter.unwrap_or_else(|| AdapterKind::infer(&info.exports));
    let encode = || -> anyhow::Result<Vec<u8>> {
        let (module, shimmed) = match kind {
            AdapterKind::Command | AdapterKind::Reactor => preview1::route_to_shim(module)?,
            AdapterKind::Proxy => (module.to_vec(), false),
        };
        let uses_preview1 = inspect(&module, what)?
            .imports
            .iter()
            .any(|i| i.starts_with("wasi_snapshot_preview1::"));
        let mut encoder = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)?;
        if shimmed {
            encoder = encoder.adapter(preview1::SHIM_MODULE, preview1::shim_module()?)?;
        }
        if uses_preview1 {
            encoder = encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                kind.adapter_bytes(),
            )?;
        }
        encoder.encode()
    };
    let bytes = encode().map_err(|reason| ConvertError::Encode {
        what: what.to_string(),
        adapter: kind,
        reason,
    })?;
    Ok((bytes, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_with_custom(name: &str) -> Vec<u8> {
        let mut m = wasm_encoder::Module::new();
        m.section(&wasm_encoder::CustomSection {
            name: name.into(),
            data: b"payload".as_slice().into(),
        });
        m.finish()
    }

    #[test]
    fn worlds_and_wasi_versions_are_recognised_by_name() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p3 = world(&names(&["wasi:http/handler@0.3.2"])).expect("0.3 world");
        assert_eq!((p3.name, p3.wasi.as_str()), ("wasi:http/service", "0.3.2"));
        let p2 = world(&names(&["wasi:http/incoming-handler@0.2.12"])).expect("0.2 world");
        assert_eq!((p2.name, p2.wasi.as_str()), ("wasi:http/proxy", "0.2.12"));
        let cli = world(&names(&["wasi:cli/run@0.2.6"])).expect("command world");
        assert_eq!(cli.name, "wasi:cli/command");
        // A 0.2 name for a 0.3 interface (or the reverse) is no known world.
        assert_eq!(world(&names(&["wasi:http/handler@0.2.0"])), None);
        assert_eq!(world(&names(&["zero:chrono/tick-handler@0.1.0"])), None);
        assert_eq!(
            wasi_versions(&names(&[
                "wasi:http/types@0.3.2",
                "wasi:cli/stdout@0.2.6",
                "wasi:io/streams@0.2.12",
                "zero:db/sql@0.1.0",
                "wasi:random/random",
            ])),
            ["0.2", "0.3"]
        );
    }

    #[test]
    fn detects_kinds_by_header_and_ignores_version() {
        assert_eq!(
            detect(&[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]),
            Ok(WasmKind::CoreModule)
        );
        assert_eq!(
            detect(&[0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0]),
            Ok(WasmKind::Component)
        );
        assert_eq!(
            detect(&[0, 0x61, 0x73, 0x6d, 0x0e, 0x7f, 1, 0]),
            Ok(WasmKind::Component)
        );
        assert!(matches!(
            detect(b"#!/bin/sh\necho"),
            Err(FormatError::NotWasm { .. })
        ));
        assert!(matches!(detect(b""), Err(FormatError::TooShort { len: 0 })));
        assert!(matches!(
            detect(&[0, 0x61, 0x73, 0x6d, 1, 0, 2, 0]),
            Err(FormatError::UnknownLayer { layer: 2 })
        ));
    }

    #[test]
    fn core_module_error_gives_directions() {
        let m = wasm_encoder::Module::new().finish();
        let err = expect_component(&m, "app.wasm").unwrap_err().to_string();
        assert!(err.contains("core module"), "{err}");
        assert!(err.contains("zero convert"), "{err}");
        assert!(err.contains("wasm32-wasip2"), "{err}");
    }

    #[test]
    fn hash_ignores_ucan_section_only() {
        let plain = wasm_encoder::Module::new().finish();
        let signed = append_custom_section(&plain, UCAN_SECTION, b"token bytes");
        let other = append_custom_section(&plain, "name", b"x");
        wasmparser::Validator::new()
            .validate_all(&signed)
            .expect("still valid wasm");
        assert_eq!(
            content_hash(&plain).unwrap(),
            content_hash(&signed).unwrap()
        );
        assert_ne!(content_hash(&plain).unwrap(), content_hash(&other).unwrap());
        assert_eq!(strip_custom_section(&signed, UCAN_SECTION).unwrap(), plain);
        let sections = custom_sections(&signed).unwrap();
        assert_eq!(sections.len(), 1);
        assert_eq!(&signed[sections[0].data.clone()], b"token bytes");
    }

    #[test]
    fn truncated_section_is_an_error_not_a_panic() {
        let mut m = module_with_custom("ucan");
        m.truncate(m.len() - 3);
        assert!(matches!(
            custom_sections(&m),
            Err(FormatError::Invalid { .. })
        ));
    }

    #[test]
    fn hash_round_trips_through_text() {
        let h = content_hash(&module_with_custom("x")).unwrap();
        assert_eq!(ContentHash::parse(&h.to_string()).unwrap(), h);
        assert!(ContentHash::parse("sha256:zz").is_err());
    }

    #[test]
    fn converting_a_component_is_refused() {
        let c = wasm_encoder::Component::new().finish();
        assert!(matches!(
            convert(&c, "c.wasm", None),
            Err(ConvertError::Format(FormatError::AlreadyComponent { .. }))
        ));
    }

    #[test]
    fn converts_a_module_without_wasi() {
        let mut m = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = wasm_encoder::FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut code = wasm_encoder::CodeSection::new();
        let mut f = wasm_encoder::Function::new([]);
        f.instruction(&wasm_encoder::Instruction::End);
        code.function(&f);
        m.section(&code);
        let (component, kind) = convert(&m.finish(), "m.wasm", None).unwrap();
        assert_eq!(kind, AdapterKind::Reactor);
        assert_eq!(detect(&component), Ok(WasmKind::Component));
    }
}
