//! Running a command component (`wasi:cli/run`) with the host's stdio: `zero run`.
//!
//! This is a local development tool, not the request path: the component gets the arguments,
//! environment variables and directories the user passes explicitly, and nothing else.

use std::path::PathBuf;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What `zero run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// `argv[0]` as the guest sees it.
    pub program_name: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Preopened directories: host path and the path the guest sees.
    pub dirs: Vec<(PathBuf, String)>,
}

struct CommandState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for CommandState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Runs a command component to completion and returns its exit code.
pub async fn run_command(bytes: &[u8], what: &str, opts: CommandOptions) -> anyhow::Result<i32> {
    zero_component::expect_component(bytes, what)?;
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    let engine = Engine::new(&cfg)?;
    let component = Component::new(&engine, bytes)
        .map_err(|e| anyhow::anyhow!("compiling {what} failed: {e:#}"))?;
    let mut linker = Linker::<CommandState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;

    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdio();
    builder.arg(&opts.program_name);
    for a in &opts.args {
        builder.arg(a);
    }
    for (k, v) in &opts.env {
        builder.env(k, v);
    }
    for (host, guest) in &opts.dirs {
        builder
            .preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(|e| {
                anyhow::anyhow!("cannot open directory {} for --dir: {e:#}", host.display())
            })?;
    }
    let mut store = Store::new(
        &engine,
        CommandState {
            wasi: builder.build(),
            table: ResourceTable::new(),
        },
    );
    let command = Command::instantiate_async(&mut store, &component, &linker)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{what} cannot run as a command: {e:#} (a command component exports `wasi:cli/run`; \
                 build a binary crate for wasm32-wasip2, or `zero convert` a wasm32-wasip1 program)"
            )
        })?;
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                Ok(exit.0)
            } else {
                Err(anyhow::anyhow!("{what} trapped: {e:?}"))
            }
        }
    }
}
