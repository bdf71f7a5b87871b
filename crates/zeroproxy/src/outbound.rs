//! `wasi:http/types` and `wasi:http/outgoing-handler` for components, with outgoing requests
//! denied unless the app's settings allow the destination.

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};
use zero_provider::{AppSettings, HostState, Invocation, Provider, ResourceProvider};

/// The resource provider for `wasi:http` host interfaces.
#[derive(Debug, Default)]
pub struct HttpResources;

impl Provider for HttpResources {
    fn name(&self) -> &'static str {
        "wasi-http"
    }
}

impl ResourceProvider for HttpResources {
    fn interfaces(&self) -> Vec<String> {
        vec![
            "wasi:http/types".into(),
            "wasi:http/outgoing-handler".into(),
        ]
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> anyhow::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
        Ok(())
    }

    fn configure_store(&self, state: &mut HostState) -> anyhow::Result<()> {
        state.http_hooks = Box::new(OutboundPolicy {
            invocation: state.invocation.clone(),
            settings: state.invocation.settings.clone(),
        });
        Ok(())
    }
}

/// Outgoing-HTTP hooks that allow only the hosts listed in the app's settings.
pub struct OutboundPolicy {
    invocation: Invocation,
    settings: Arc<AppSettings>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if host.is_empty() || !self.settings.outbound_allowed(&host, port) {
            tracing::warn!(
                tenant = %self.invocation.tenant,
                app = %self.invocation.app,
                request_id = %self.invocation.request_id,
                %uri,
                "outgoing HTTP request denied: `{host}` is not in the app's allowed_outbound_hosts (add it in zerocore.toml to allow it)"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}
