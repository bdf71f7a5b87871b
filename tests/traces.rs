//! Traces (part of the `e2e_observe` binary): a real node exporting OTLP/HTTP to a collector the
//! test runs on loopback (a hyper server decoding `ExportTraceServiceRequest`), W3C trace
//! context in and out, traces off by default, and a dead or stalled collector that must not
//! hurt the node.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use super::{admin, scrape_until, signed_by, value};
use crate::support::*;

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP traces receiver on loopback: every span of every export it was sent.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    exports: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    /// `stall`: accept exports and never answer them (a collector that hangs).
    fn start(stall: bool) -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(AtomicUsize::new(0));
        let (s, e) = (spans.clone(), exports.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, e) = (s.clone(), e.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (s, e) = (s.clone(), e.clone());
                        async move { receive(req, &s, &e, stall).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            exports,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The spans of trace `trace_id`, once at least `n` have arrived.
    fn wait_trace(&self, trace_id: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: Vec<Got> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {} spans arrived, expected {n}: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    spans: &Mutex<Vec<Got>>,
    exports: &AtomicUsize,
    stall: bool,
) -> Result<hyper::Response<Full<bytes::Bytes>>, hyper::Error> {
    exports.fetch_add(1, Ordering::SeqCst);
    if stall {
        std::future::pending::<()>().await;
    }
    let ok_path = req.uri().path() == "/v1/traces";
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await?.to_bytes();
    let status = match ExportTraceServiceRequest::decode(body) {
        Ok(export) if ok_path && protobuf => {
            let mut all = spans.lock().unwrap();
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                    .unwrap_or_default();
                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                    all.push(Got {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent: hex::encode(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
            200
        }
        _ => 400,
    };
    let mut resp = hyper::Response::new(Full::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    ));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(resp)
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An upstream on loopback that answers `ok` and keeps the request heads it was sent.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Some(head) = read_head_bytes(&mut s) else {
                    return;
                };
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    (addr, heads)
}

fn telemetry(endpoint: &str, extra: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = {endpoint:?}\nservice_name = \"edge-7\"\n{extra}\n[outbound]\nallow_private = [\"127.0.0.1/32\"]\n"
    )
}

/// acme's `probe` (fsprobe, reading its files) at `/probe` and `fetcher` (outgoing, allowed to
/// reach `upstream`) at `/fetch`.
fn deploy_apps(w: &World, upstream: SocketAddr) {
    let mut owner = w.owner(&w.acme);
    owner
        .fs_put("acme", "/f.txt", &b"content"[..], true)
        .unwrap();
    let bytes = std::fs::read(guest_wasm("fsprobe")).unwrap();
    let g = grant("/fs/read", r#"[["==", ".path", "/"]]"#, None);
    let probe = zero_client::sign_component(&bytes, &w.acme.owner, &w.acme.chain, &g).unwrap();
    owner
        .deploy("acme", "probe", &["/probe".into()], &[], &probe)
        .unwrap();
    owner
        .deploy(
            "acme",
            "fetcher",
            &["/fetch".into()],
            &[upstream.to_string()],
            &signed_by(&w.acme, "outgoing"),
        )
        .unwrap();
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn a_request_is_traced_through_routing_instantiation_host_calls_its_response_and_upstream() {
    let collector = Collector::start(false);
    let (upstream, heads) = recording_upstream();
    let w = World::spec("traces-on")
        .with(&telemetry(&collector.endpoint(), ""))
        .start();
    deploy_apps(&w, upstream);

    // A client's traceparent is the parent of the request's span.
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = get_with(
        &w.node.url("/probe?op=read&path=/f.txt"),
        "traceparent",
        &traceparent,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("content"), "{}", r.body);
    let spans = collector.wait_trace(TRACE, 5);
    let named = |name: &str| -> Vec<&Got> { spans.iter().filter(|s| s.name == name).collect() };
    let request = named("zero.request");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    assert_eq!(request.parent, PARENT);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.service, "edge-7");
    assert_eq!(request.attr("zero.tenant"), Some("acme"));
    assert_eq!(request.attr("zero.app"), Some("probe"));
    assert_eq!(request.attr("http.route"), Some("/probe"));
    assert_eq!(request.attr("http.request.method"), Some("GET"));
    assert_eq!(request.attr("url.path"), Some("/probe"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert_eq!(request.attr("zero.request_id"), r.request_id.as_deref());
    let spans = collector.wait_trace(TRACE, 5);
    for name in ["zero.route", "zero.instantiate", "zero.response"] {
        let s = spans.iter().find(|s| s.name == name);
        let s = s.unwrap_or_else(|| panic!("no {name} span: {spans:#?}"));
        assert_eq!(s.parent, request.span_id, "{s:#?}");
    }
    let host_calls: Vec<&Got> = spans
        .iter()
        .filter(|s| s.name == "zero.host_call")
        .collect();
    assert!(
        host_calls
            .iter()
            .any(|s| s.attr("zero.provider") == Some("fs")),
        "no host call of the file provider: {spans:#?}"
    );
    for s in &host_calls {
        assert_eq!(s.parent, request.span_id, "{s:#?}");
        assert_eq!(s.attr("zero.tenant"), Some("acme"));
        assert_eq!(s.attr("zero.app"), Some("probe"));
    }
    // The trace id is in the access line.
    w.node.wait_log("the access line with the trace id", |v| {
        v["target"] == "access"
            && v["request_id"] == r.request_id.as_deref().unwrap_or("?")
            && v["trace_id"] == TRACE
    });

    // An outgoing request carries the trace on, from the request's `zero.outbound` span.
    let other = "0af7651916cd43dd8448eb211c80319c";
    let r = get_with_headers(
        &w.node.url("/fetch"),
        &[
            ("x-target", &format!("http://{upstream}/up")),
            ("traceparent", &format!("00-{other}-b7ad6b7169203331-01")),
            ("tracestate", "vendor=abc"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = collector.wait_trace(other, 4);
    let request = spans.iter().find(|s| s.name == "zero.request").unwrap();
    let outbound = spans.iter().find(|s| s.name == "zero.outbound");
    let outbound = outbound.unwrap_or_else(|| panic!("no outbound span: {spans:#?}"));
    assert_eq!(outbound.parent, request.span_id);
    assert_eq!(outbound.kind, SpanKind::Client as i32);
    assert_eq!(
        outbound.attr("server.port"),
        Some(&*upstream.port().to_string())
    );
    assert_eq!(outbound.attr("http.response.status_code"), Some("200"));
    let head = heads.lock().unwrap().last().cloned().unwrap();
    let sent = format!("traceparent: 00-{other}-{}-01\r\n", outbound.span_id);
    assert!(head.contains(&sent), "{sent} not in {head}");
    assert!(head.contains("tracestate: vendor=abc\r\n"), "{head}");
    // No host-call spans for wasi:http's own calls (they are the outbound span).
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "zero.host_call")
            .all(|s| s.attr("zero.provider") != Some("http")),
        "{spans:#?}"
    );

    // A malformed or oversized traceparent is ignored: a new trace, and the request served.
    let huge = format!("00-{TRACE}-{PARENT}-01{}", "0".repeat(8000));
    for bad in [
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("01-{TRACE}-{PARENT}-01"),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        huge,
    ] {
        let r = get_with_headers(
            &w.node.url("/probe?op=read&path=/f.txt"),
            &[("traceparent", &bad), ("tracestate", &"k=v,".repeat(2000))],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let rid = r.request_id.unwrap();
        let line = w.node.wait_log("the access line", |v| {
            v["target"] == "access" && v["request_id"] == rid.as_str()
        });
        let id = line["trace_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        assert_ne!(id, TRACE);
        let spans = collector.wait_trace(&id, 1);
        let request = spans.iter().find(|s| s.name == "zero.request");
        let request = request.unwrap_or_else(|| panic!("{spans:#?}"));
        assert_eq!(request.parent, "", "a root span: {request:#?}");
    }

    // A request no app is routed at is a trace too, its route span failed, no tenant named.
    let r = get(&w.node.url("/nowhere"));
    assert_eq!(r.status, 404);
    let rid = r.request_id.unwrap();
    let line = w.node.wait_log("the 404's access line", |v| {
        v["target"] == "access" && v["request_id"] == rid.as_str()
    });
    let spans = collector.wait_trace(line["trace_id"].as_str().unwrap(), 2);
    let request = spans.iter().find(|s| s.name == "zero.request").unwrap();
    assert_eq!(request.attr("http.response.status_code"), Some("404"));
    assert_eq!(request.attr("zero.tenant"), None);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "zero.route" && s.parent == request.span_id)
    );

    // The exporter's counters are on /metrics.
    let mut admin = admin(&w);
    let scrape = scrape_until(&mut admin, "exported spans", |s| {
        value(s, "zero_node_trace_spans_exported_total", &[]).is_some_and(|v| v >= 10.0)
    });
    assert_eq!(
        value(&scrape, "zero_node_trace_spans_dropped_total", &[]),
        Some(0.0)
    );
    w.node.stop();
}

#[test]
fn traces_are_off_by_default_and_send_nothing() {
    let collector = Collector::start(false);
    let (upstream, heads) = recording_upstream();
    // The OpenTelemetry environment variables do not turn traces on: only `[telemetry]` does.
    let w = World::spec("traces-off")
        .with("[outbound]\nallow_private = [\"127.0.0.1/32\"]\n")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector.endpoint())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{}", collector.addr),
        )
        .start();
    deploy_apps(&w, upstream);
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = get_with_headers(
        &w.node.url("/fetch"),
        &[
            ("x-target", &format!("http://{upstream}/up")),
            ("traceparent", &traceparent),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get_with(
        &w.node.url("/probe?op=read&path=/f.txt"),
        "traceparent",
        &traceparent,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rid = r.request_id.unwrap();
    let line = w.node.wait_log("the access line", |v| {
        v["target"] == "access" && v["request_id"] == rid.as_str()
    });
    assert!(line.get("trace_id").is_none(), "{line}");
    // The guest's request goes as the guest made it: no trace context added.
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert!(!head.contains("traceparent"), "{head}");
    // Nothing reaches the collector: an exporter would have sent within its batch delay
    // (0.5 s); allow it several times that.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(collector.exports.load(Ordering::SeqCst), 0);
    let scrape = admin(&w).metrics().unwrap();
    assert!(!scrape.contains("zero_node_trace_"), "{scrape}");
    w.node.stop();
}

#[test]
fn a_dead_or_stalled_collector_costs_requests_nothing() {
    // Dead: nothing listens where the collector should be.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let stalled = Collector::start(true);
    // The stalled collector's exports wait 2 s each: far longer than the two requests whose
    // spans fill the 16-span queue take, even on a loaded machine (with 300 ms, requests slower
    // than 150 ms each never filled it, and nothing was dropped).
    for (name, endpoint, timeout_ms) in [
        ("traces-dead", format!("http://{dead}/v1/traces"), 300),
        ("traces-stalled", stalled.endpoint(), 2000),
    ] {
        let (upstream, _) = recording_upstream();
        let w = World::spec(name)
            .with(&telemetry(
                &endpoint,
                &format!("max_queued_spans = 16\nexport_timeout_ms = {timeout_ms}\n"),
            ))
            .start();
        deploy_apps(&w, upstream);
        for i in 0..40 {
            let r = get(&w.node.url("/probe?op=read&path=/f.txt"));
            assert_eq!(r.status, 200, "{name} request {i}: {}", r.body);
            assert!(r.body.contains("content"), "{}", r.body);
        }
        // Exports that fail are counted; a collector that hangs also fills the queue (each
        // export waits export_timeout_ms), and the spans past it are dropped and counted. (A
        // dead one refuses at once: the queue keeps up.)
        // Requests go on while waiting: on a fast machine the 40 above can all end within the
        // first batch's 0.5 s, so that one export takes every span and the queue never fills.
        let stalls = name == "traces-stalled";
        let mut admin = admin(&w);
        let url = w.node.url("/probe?op=read&path=/f.txt");
        scrape_until(&mut admin, "dropped and failed spans", |s| {
            assert_eq!(get(&url).status, 200);
            value(s, "zero_node_trace_export_failures_total", &[]).is_some_and(|v| v > 0.0)
                && (!stalls
                    || value(s, "zero_node_trace_spans_dropped_total", &[])
                        .is_some_and(|v| v > 0.0))
        });
        w.node.wait_log("the export warning", |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("traces: the collector did not take"))
        });
        // The node still serves, and stops promptly.
        let r = get(&w.node.url("/probe?op=read&path=/f.txt"));
        assert_eq!(r.status, 200);
        let started = Instant::now();
        w.node.stop();
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{name}: the node took {:?} to stop",
            started.elapsed()
        );
    }
    assert!(stalled.exports.load(Ordering::SeqCst) > 0);
}

#[test]
fn bad_telemetry_settings_are_refused_with_what_to_write() {
    let dir = test_dir("traces-config");
    for (toml, says) in [
        (
            "[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n",
            "must be an http:// URL",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
            "/v1/traces",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsampling_ratio = 2.0\n",
            "sampling_ratio = 2",
        ),
        (
            "[telemetry]\nendpoint = \"x\"\n",
            "unknown field `endpoint`",
        ),
    ] {
        let cfg = dir.join("zerocore.toml");
        std::fs::write(
            &cfg,
            NodeConfig::new(&dir.join("data")).with(toml).to_string(),
        )
        .unwrap();
        let out = std::process::Command::new(zero_bin())
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{toml}: {err}");
    }
}
