//! Traces: the OpenTelemetry spans of a request, made through one tracer the node installs at
//! start when `[telemetry]` names a collector (see `docs/operations.md`, "Traces").
//!
//! Everything here costs one load and one branch while no tracer is installed (the default):
//! [`enabled`] is false, [`start`] returns `None`, and the callers skip their span work.
//!
//! **Names and attributes are the node's.** Span names are the fixed constants of this module
//! (the [`names`]); attribute values come from the node (the tenant and app, the route the
//! owner deployed, the provider's field name, a status code) or are the client's own request
//! line, bounded ([`bounded`]). A guest cannot name a span or add attributes to one: nothing
//! it sends or returns becomes either.
//!
//! **W3C trace context.** [`parse_traceparent`] reads a `traceparent` header strictly (version
//! `00`, exactly 55 bytes, lowercase hex, ids not all zero); anything else is ignored, never an
//! error. [`parse_tracestate`] keeps a `tracestate` of at most [`MAX_TRACESTATE_BYTES`] and
//! valid members, else none. [`traceparent`] and [`tracestate`] write a context's headers for
//! the requests a guest sends.
//!
//! **Host calls.** The core opens a [`names::HOST_CALL`] span each time a provider's host
//! function reaches its state (through [`HasView`](crate::HasView)), for providers whose
//! [`ResourceProvider::TRACE_HOST_CALLS`](crate::ResourceProvider::TRACE_HOST_CALLS) is true,
//! at most [`MAX_HOST_CALL_SPANS`] per store.

use std::sync::OnceLock;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, Tracer,
};

pub use opentelemetry::trace::SpanKind as Kind;
pub use opentelemetry::trace::TraceContextExt;
pub use opentelemetry::{Context, KeyValue};

/// The names of the node's spans.
pub mod names {
    /// A request, from its head arriving to its response's last byte (kind server).
    pub const REQUEST: &str = "zero.request";
    /// Finding the app a request is routed to.
    pub const ROUTE: &str = "zero.route";
    /// Instantiating the app's component for a request.
    pub const INSTANTIATE: &str = "zero.instantiate";
    /// One host call of a provider (attribute `zero.provider`).
    pub const HOST_CALL: &str = "zero.host_call";
    /// An outgoing HTTP request of a guest, until its response head (kind client).
    pub const OUTBOUND: &str = "zero.outbound";
    /// The response, from its head to its last byte.
    pub const RESPONSE: &str = "zero.response";
}

/// The most host-call spans one store records; later host calls are counted in the request
/// span's `zero.host_calls.untraced` instead, so that a guest looping on host calls cannot
/// grow its trace (or the export queue) without bound.
pub const MAX_HOST_CALL_SPANS: u32 = 64;

/// The longest `tracestate` kept (the W3C limit a vendor must propagate is 512 bytes); a longer
/// one is dropped.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The longest attribute value taken from a client's request (its path); longer values are cut
/// at a character boundary.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Installs the node's tracer; every span from then on goes to it. Only the first call has an
/// effect (it returns whether it did).
pub fn install(tracer: BoxedTracer) -> bool {
    TRACER.set(tracer).is_ok()
}

/// Whether a tracer is installed (traces are on).
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The request's trace context as it travels with the request into the core (an extension of
/// the `http::Request` the core is given): the parent of the spans made on its behalf.
#[derive(Clone, Debug)]
pub struct Parent(pub Context);

/// Starts span `name` of `kind` as a child of `parent` (a remote parent from `traceparent`, or
/// a span of ours), with `attributes`; `None` while traces are off. The span ends when
/// [`end`] or [`Span`]'s drop is called on the returned context.
pub fn start(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Option<Context> {
    let tracer = TRACER.get()?;
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    Some(parent.with_span(span))
}

/// Ends the span of `cx`.
pub fn end(cx: &Context) {
    cx.span().end();
}

/// Marks the span of `cx` failed with `reason` (a message of the node's, not a guest's).
pub fn fail(cx: &Context, reason: impl Into<std::borrow::Cow<'static, str>>) {
    cx.span().set_status(Status::error(reason));
}

/// A span that ends when dropped (`None` inside while traces are off).
#[derive(Debug, Default)]
pub struct Span(Option<Context>);

impl Span {
    /// No span.
    pub const fn none() -> Span {
        Span(None)
    }

    /// Starts span `name` as a child of `parent` (no span without a parent or while traces are
    /// off); see [`start`].
    pub fn child(
        parent: Option<&Context>,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        match parent {
            Some(parent) if enabled() => Span(start(name, kind, parent, attributes())),
            _ => Span(None),
        }
    }

    /// The span's context (a parent for its children), if there is a span.
    pub fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    /// Sets an attribute on the span, if there is one.
    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// Marks the span failed with `reason`, if there is one.
    pub fn fail(&self, reason: impl Into<std::borrow::Cow<'static, str>>) {
        if let Some(cx) = &self.0 {
            fail(cx, reason);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            end(cx);
        }
    }
}

/// `value` cut to at most [`MAX_ATTRIBUTE_BYTES`] at a character boundary.
pub fn bounded(value: &str) -> String {
    if value.len() <= MAX_ATTRIBUTE_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// The W3C `traceparent` header `value` as a remote span context, or `None` if it is not
/// exactly a version `00` header (`00-` 32 lowercase hex digits `-` 16 lowercase hex digits
/// `-` 2 lowercase hex digits, trace and parent ids not all zero). Only the `sampled` flag is
/// kept.
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    if value.len() != 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if &value[..2] != b"00" {
        return None;
    }
    fn hex(s: &[u8]) -> Option<&str> {
        s.iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then(|| std::str::from_utf8(s).ok())
            .flatten()
    }
    let trace_id = u128::from_str_radix(hex(&value[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(hex(&value[36..52])?, 16).ok()?;
    let flags = u8::from_str_radix(hex(&value[53..55])?, 16).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::NONE,
    ))
}

/// The W3C `tracestate` header `value`, or `None` if it is longer than
/// [`MAX_TRACESTATE_BYTES`], not text, or has a malformed member (or more than 32).
pub fn parse_tracestate(value: &[u8]) -> Option<TraceState> {
    if value.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    if text.split(',').filter(|m| !m.trim().is_empty()).count() > 32 {
        return None;
    }
    text.parse().ok()
}

/// The parent context of a request whose `traceparent` header is `traceparent` and whose
/// `tracestate` header is `tracestate` (each `None` when absent or sent more than once): the
/// remote span if `traceparent` is valid, else none (a new trace).
pub fn remote_parent(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Context {
    let Some(parent) = traceparent.and_then(parse_traceparent) else {
        return Context::new();
    };
    let state = tracestate
        .and_then(parse_tracestate)
        .unwrap_or(TraceState::NONE);
    let parent = SpanContext::new(
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags(),
        true,
        state,
    );
    Context::new().with_remote_span_context(parent)
}

/// The `traceparent` header for a request sent from within the span of `cx`, if that span has
/// a valid context.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The `tracestate` header for a request sent from within the span of `cx`, if it has one.
pub fn tracestate(cx: &Context) -> Option<String> {
    let span = cx.span();
    let header = span.span_context().trace_state().header();
    (!header.is_empty()).then_some(header)
}

/// The trace id of the span of `cx` (32 lowercase hex digits), if it is valid.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_a_valid_traceparent() {
        let sc = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        let unsampled = GOOD.replace("-01", "-00");
        assert!(
            !parse_traceparent(unsampled.as_bytes())
                .unwrap()
                .is_sampled()
        );
        // Unknown flags are not kept.
        let other = GOOD.replace("-01", "-ff");
        assert_eq!(
            parse_traceparent(other.as_bytes()).unwrap().trace_flags(),
            TraceFlags::SAMPLED
        );
    }

    #[test]
    fn ignores_malformed_traceparents() {
        let long = format!("{GOOD}-extra");
        let huge = "0".repeat(100_000);
        for bad in [
            "",
            "00",
            &GOOD[..54],
            &long,
            &huge,
            &GOOD.replace("00-4b", "01-4b"),
            &GOOD.replace("00-4b", "ff-4b"),
            &GOOD.to_uppercase(),
            &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &GOOD.replace('-', "_"),
            &GOOD.replace("4bf9", "4bg9"),
            &GOOD.replace("4bf9", "+bf9"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad:.80}");
        }
        assert!(parse_traceparent(&[0xff; 55]).is_none());
    }

    #[test]
    fn bounds_tracestate() {
        assert_eq!(
            parse_tracestate(b"vendor=abc,other=1").unwrap().header(),
            "vendor=abc,other=1"
        );
        let big = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES));
        assert!(parse_tracestate(big.as_bytes()).is_none());
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tracestate(many.join(",").as_bytes()).is_none());
        assert!(parse_tracestate(b"no equals").is_none());
        assert!(parse_tracestate(&[0xff, b'=', b'1']).is_none());
    }

    #[test]
    fn a_valid_parent_round_trips_into_the_next_traceparent() {
        let cx = remote_parent(Some(GOOD.as_bytes()), Some(b"v=1"));
        assert_eq!(traceparent(&cx).as_deref(), Some(GOOD));
        assert_eq!(tracestate(&cx).as_deref(), Some("v=1"));
        assert_eq!(
            trace_id(&cx).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let none = remote_parent(Some(b"garbage"), Some(b"v=1"));
        assert!(traceparent(&none).is_none());
        assert!(tracestate(&none).is_none());
    }

    #[test]
    fn attribute_values_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded("/short"), "/short");
        let long = "é".repeat(MAX_ATTRIBUTE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ATTRIBUTE_BYTES && cut.len() >= MAX_ATTRIBUTE_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn nothing_is_started_without_a_tracer() {
        // The unit tests of this crate never install one.
        assert!(!enabled());
        assert!(start(names::REQUEST, SpanKind::Server, &Context::new(), vec![]).is_none());
        let s = Span::child(
            Some(&Context::new()),
            names::ROUTE,
            SpanKind::Internal,
            || unreachable!("attributes are not built while traces are off"),
        );
        assert!(s.context().is_none());
    }
}
