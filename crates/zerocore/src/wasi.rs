//! The WASI base every component gets: CLI environment (empty), stdio (to the node log), clocks,
//! random, I/O streams, and the filesystem and sockets interfaces with nothing behind them (no
//! preopened directories, every socket address denied) until a provider grants something.

use wasmtime::component::Linker;
use zero_provider::{HostState, Provider, ResourceProvider};

/// The resource provider for the standard WASI 0.2 interfaces.
#[derive(Debug, Default)]
pub struct WasiBase;

impl Provider for WasiBase {
    fn name(&self) -> &'static str {
        "wasi"
    }
}

/// The interfaces added by `wasmtime_wasi::p2::add_to_linker_async`.
const INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

impl ResourceProvider for WasiBase {
    fn interfaces(&self) -> Vec<String> {
        INTERFACES.iter().map(|s| s.to_string()).collect()
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> anyhow::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)?;
        Ok(())
    }
}
