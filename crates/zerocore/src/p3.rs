//! WASI 0.3: the interfaces the node links for components built for `wasi:http@0.3` (the
//! `wasi:http/service` world, whose `wasi:http/handler` export is an async function), and the
//! run of one HTTP request through that export.
//!
//! A 0.3 request goes through the same path as a 0.2 one (routing, grants, the node's, tenant's
//! and app's limits, the log): [`App::http`](crate::App::http) picks the export the component
//! has. Each request gets a fresh store and instance, as for 0.2, so the store's CPU budget,
//! memory limits and the wall-clock limit bound that one request. The store's event loop
//! (`run_concurrent`) runs until the guest's task and every task it spawned (such as the one
//! writing the response body) have finished, so the body streams under the same limits.
//!
//! Linked for 0.3: `wasi:cli` (stdio to the node log, an empty environment), `wasi:clocks`,
//! `wasi:random` and `wasi:http/types`. Not linked (named at deploy when a component imports
//! them): `wasi:filesystem`, `wasi:sockets` and `wasi:http/client` at 0.3 — files and outgoing
//! HTTP go through the 0.2 interfaces of the zerofs and zeroproxy providers, under their rules.

use std::future::poll_fn;

use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiBody, WasiHttp, WasiHttpCtxView};

use crate::StoreData;
use crate::app::{GuestFuture, ResponseSender};

/// The WIT interfaces linked for 0.3 components (without versions; see [`provides`]).
pub(crate) const INTERFACES: &[&str] = &[
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
    "wasi:cli/types",
    "wasi:clocks/types",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/system-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:http/types",
];

/// The export a component serves HTTP with under WASI 0.3.
pub const HTTP_HANDLER: &str = "wasi:http/handler";

/// Whether `import` (a WIT name such as `wasi:http/types@0.3.2`) is a WASI 0.3 interface.
pub(crate) fn is_p3(import: &str) -> bool {
    import
        .split_once('@')
        .is_some_and(|(_, version)| version.starts_with("0.3."))
}

/// Whether the node links the 0.3 interface `import` (versioned, e.g. `wasi:cli/stdout@0.3.0`).
pub(crate) fn provides(import: &str) -> bool {
    let unversioned = import.split('@').next().unwrap_or(import);
    INTERFACES.contains(&unversioned)
}

/// The 0.3 interfaces for the "available" part of a deploy refusal (`name@0.3`).
pub(crate) fn available() -> impl Iterator<Item = String> {
    INTERFACES.iter().map(|i| format!("{i}@0.3"))
}

/// The core's `wasi:http` view of a store, for the 0.3 bindings.
fn http_view<T: StoreData>(data: &mut T) -> WasiHttpCtxView<'_> {
    data.core_mut().http_view()
}

/// Adds the WASI 0.3 interfaces listed in [`INTERFACES`] to the linker of every store.
pub(crate) fn add_to_linker<T: StoreData>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    wasmtime_wasi::p3::cli::add_to_linker(linker)?;
    wasmtime_wasi::p3::clocks::add_to_linker(linker)?;
    wasmtime_wasi::p3::random::add_to_linker(linker)?;
    wasmtime_wasi_http::p3::bindings::http::types::add_to_linker::<T, WasiHttp>(
        linker,
        http_view::<T>,
    )?;
    Ok(())
}

/// Brings `request` into `store` for a 0.3 component and returns the guest's part of the run:
/// instantiate, call `wasi:http/handler#handle`, send its response (or its error code) on
/// `response`, then drive the store's event loop until every task of the guest has finished
/// (the body it streams included).
pub(crate) fn http<T: StoreData>(
    store: &mut Store<T>,
    pre: ServicePre<T>,
    request: http::Request<WasiBody>,
    response: ResponseSender,
) -> impl for<'a> FnOnce(&'a mut Store<T>) -> GuestFuture<'a> + Send + 'static {
    let (request, request_io) = {
        let view = http_view(store.data_mut());
        wasmtime_wasi_http::p3::Request::from_http(view.hooks, request)
    };
    move |store: &mut Store<T>| -> GuestFuture<'_> {
        Box::pin(async move {
            let service = pre.instantiate_async(&mut *store).await?;
            store
                .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
                    let request = accessor.with(|mut access| {
                        http_view(access.get())
                            .table
                            .push(request)
                            .context("failed to bring the request into the store")
                    })?;
                    let answer = service
                        .wasi_http_handler()
                        .call_handle(accessor, request)
                        .await?;
                    match answer {
                        Ok(res) => {
                            let res = accessor.with(|mut access| {
                                let res = http_view(access.get())
                                    .table
                                    .delete(res)
                                    .context("failed to take the response from the store")?;
                                res.into_http_with_getter(&mut access, request_io, http_view::<T>)
                            })?;
                            // The client may have gone; the guest still runs to its end.
                            let _ = response.send(Ok(res));
                        }
                        Err(code) => {
                            let _ = response
                                .send(Err(ErrorCode::InternalError(Some(format!("{code:?}")))));
                        }
                    }
                    // The guest keeps running after it returned its response (e.g. the task
                    // writing the body): the run ends when all its tasks have.
                    poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                    Ok(())
                })
                .await?
        })
    }
}
