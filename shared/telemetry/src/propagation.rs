//! W3C trace context (`traceparent`, `tracestate`) across process
//! boundaries. Every function is a no-op while tracing is off: the global
//! propagator is then the no-op one, and spans carry no OpenTelemetry
//! context.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace context of one span, as the propagator writes it: a few
/// `name → value` pairs (`traceparent`, and `tracestate` when there is one).
/// Empty when tracing is off or there was no span.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext(BTreeMap<String, String>);

impl TraceContext {
    /// The context of the current span: the parent of whatever continues
    /// this work elsewhere.
    pub fn current() -> Self {
        Self::of(&Span::current())
    }

    /// The context of `span`.
    pub fn of(span: &Span) -> Self {
        let mut fields = BTreeMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&span.context(), &mut MapCarrier(&mut fields));
        });
        Self(fields)
    }

    /// A context read from name/value pairs, such as Kafka headers; pairs
    /// that are not UTF-8 are skipped.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter(|(name, _)| FIELDS.contains(name))
                .filter_map(|(name, value)| {
                    Some((name.to_owned(), std::str::from_utf8(value).ok()?.to_owned()))
                })
                .collect(),
        )
    }

    /// A context read from HTTP headers or gRPC metadata.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_pairs(
            FIELDS
                .iter()
                .filter_map(|name| Some((*name, headers.get(*name)?.as_bytes()))),
        )
    }

    /// The pairs to write as message headers.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the context into HTTP headers or gRPC metadata.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in self.pairs() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
    }

    /// The context as a JSON object, for a database column; `None` when
    /// empty, so untraced rows store NULL.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        (!self.is_empty()).then(|| {
            serde_json::Value::Object(
                self.pairs()
                    .map(|(name, value)| (name.to_owned(), value.into()))
                    .collect(),
            )
        })
    }

    /// The context stored by [`TraceContext::to_json`]; anything else reads
    /// as empty, since a lost trace must never fail the work itself.
    pub fn from_json(value: Option<&serde_json::Value>) -> Self {
        let Some(serde_json::Value::Object(fields)) = value else {
            return Self::default();
        };
        Self(
            fields
                .iter()
                .filter(|(name, _)| FIELDS.contains(&name.as_str()))
                .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
                .collect(),
        )
    }

    /// Makes `span` a child of this context: the span continues the trace
    /// that wrote it. Call it before the span is first entered. A context
    /// that is empty or invalid leaves `span` a root.
    pub fn adopt(&self, span: &Span) {
        if let Some(parent) = self.extract() {
            // Fails only for a span already started, which callers never pass.
            let _ = span.set_parent(parent);
        }
    }

    /// Links `span` to this context without making it a child: for work
    /// that this context caused but that is not part of it.
    pub fn link(&self, span: &Span) {
        if let Some(parent) = self.extract() {
            span.add_link(parent.span().span_context().clone());
        }
    }

    /// The trace id (32 lower-case hex digits) of a valid `traceparent`,
    /// as trace viewers such as Jaeger name the trace.
    pub fn trace_id(&self) -> Option<&str> {
        let mut fields = self.0.get("traceparent")?.split('-');
        let (_version, trace_id) = (fields.next()?, fields.next()?);
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        (trace_id.len() == 32 && trace_id.chars().all(hex) && trace_id.chars().any(|c| c != '0'))
            .then_some(trace_id)
    }

    /// The context without its `tracestate`: vendor data an untrusted
    /// sender chose.
    pub fn without_state(mut self) -> Self {
        self.0.remove("tracestate");
        self
    }

    /// The OpenTelemetry context, when this one holds a valid span context.
    fn extract(&self) -> Option<opentelemetry::Context> {
        if self.is_empty() {
            return None;
        }
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&MapExtractor(&self.0))
        });
        context.span().span_context().is_valid().then_some(context)
    }
}

/// The header names of the W3C trace context.
const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

struct MapCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_trace_id_is_read_from_a_valid_traceparent_only() {
        let context = |parent: &str| TraceContext::from_pairs([("traceparent", parent.as_bytes())]);
        assert_eq!(
            context(PARENT).trace_id(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for invalid in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(context(invalid).trace_id(), None, "{invalid}");
        }
        assert_eq!(TraceContext::default().trace_id(), None);
    }

    #[test]
    fn headers_and_pairs_keep_only_the_trace_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(PARENT));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        let context = TraceContext::from_headers(&headers);
        assert_eq!(
            context.pairs().collect::<Vec<_>>(),
            [("traceparent", PARENT), ("tracestate", "vendor=1")]
        );

        let from_kafka = TraceContext::from_pairs([
            ("traceparent", PARENT.as_bytes()),
            ("dlq.reason", b"x".as_slice()),
            ("tracestate", b"\xff".as_slice()),
        ]);
        assert_eq!(
            from_kafka.pairs().collect::<Vec<_>>(),
            [("traceparent", PARENT)]
        );

        let mut written = HeaderMap::new();
        context.write_headers(&mut written);
        assert_eq!(TraceContext::from_headers(&written), context);
    }

    #[test]
    fn json_round_trips_and_garbage_reads_as_empty() {
        let context = TraceContext::from_pairs([("traceparent", PARENT.as_bytes())]);
        let json = context.to_json();
        assert_eq!(TraceContext::from_json(json.as_ref()), context);
        assert_eq!(TraceContext::default().to_json(), None);
        for garbage in [
            serde_json::json!("traceparent"),
            serde_json::json!({"traceparent": 7}),
            serde_json::json!({"other": "x"}),
        ] {
            assert!(TraceContext::from_json(Some(&garbage)).is_empty());
        }
    }
}
