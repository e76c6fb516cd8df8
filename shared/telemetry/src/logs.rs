//! The two log formats.
//!
//! JSON ([`JsonLines`]): one object per line, `timestamp`, `level`,
//! `service`, `target`, `message` and the event's fields, then `trace_id`
//! and `span_id` when the line belongs to a traced span, and `order_id` when
//! it or a span it runs in names one.
//!
//! Text ([`TextFields`], under the library's compact line layout): the
//! message, then `name=value` for the event's fields and its spans'.
//!
//! In both, no secret reaches the line: a field whose name names one
//! ([`is_secret_name`]) is written `***` (unless it is a boolean, which can
//! only say whether a secret is set), and every text value and message
//! has URL credentials and secret `NAME=value` pairs hidden ([`redact`]).
//! And no value can start a line of its own: JSON escapes control
//! characters, the text format escapes them itself
//! ([`escape_control_chars`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch, span};
use tracing_subscriber::Layer;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::redact::{REDACTED, escape_control_chars, is_secret_name, redact};

/// The field that ties a log line to an order.
const ORDER_ID: &str = "order_id";

/// The field `tracing` puts an event's text in.
const MESSAGE: &str = "message";

/// The line's own keys, which an event's fields may not overwrite
/// (`message` is the event's text, moved into place).
const RESERVED: [&str; 8] = [
    "timestamp",
    "level",
    "service",
    "target",
    "message",
    "span",
    "trace_id",
    "span_id",
];

/// The subscriber the formatter asks for a span's OpenTelemetry context,
/// filled in by [`OrderIdLayer`] when the subscriber is installed. A
/// formatter cannot use the current dispatcher: while an event is being
/// dispatched, `tracing` hides it from nested calls.
pub(crate) type SubscriberCell = Arc<OnceLock<WeakDispatch>>;

/// The JSON log format.
pub(crate) struct JsonLines {
    service: &'static str,
    subscriber: SubscriberCell,
}

impl JsonLines {
    pub(crate) fn new(service: &'static str, subscriber: SubscriberCell) -> Self {
        Self {
            service,
            subscriber,
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        // An event field named like a key of the line itself (a `service`
        // field naming the upstream) keeps its value under `fields.<name>`:
        // the line's own keys always say what they say.
        for (name, value) in fields.0 {
            if RESERVED.contains(&name.as_str()) {
                line.insert(format!("fields.{name}"), value);
            } else {
                line.insert(name, value);
            }
        }
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("service".into(), self.service.into());
        line.insert("target".into(), metadata.target().into());
        if let Some(message) = line.remove("fields.message") {
            line.insert("message".into(), message);
        }

        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            if let Some((trace_id, span_id)) = self.otel_ids(&span.id()) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
            if !line.contains_key(ORDER_ID) {
                let order_id = span
                    .scope()
                    .find_map(|span| span.extensions().get::<OrderIdField>().map(|f| f.0.clone()));
                if let Some(order_id) = order_id {
                    line.insert(ORDER_ID.into(), order_id.into());
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

impl JsonLines {
    /// The trace and span id of `span`, when it is an OpenTelemetry span
    /// (tracing is on) with a valid context.
    fn otel_ids(&self, span: &span::Id) -> Option<(String, String)> {
        let dispatch = self.subscriber.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(span, &dispatch)?;
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

/// Remembers each span's `order_id` field, so the log lines inside it carry
/// the order even when they do not name it themselves; and tells
/// [`JsonLines`] which subscriber it runs in.
pub(crate) struct OrderIdLayer {
    subscriber: SubscriberCell,
}

impl OrderIdLayer {
    pub(crate) fn new(subscriber: SubscriberCell) -> Self {
        Self { subscriber }
    }
}

struct OrderIdField(String);

impl<S> Layer<S> for OrderIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.subscriber.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut finder = OrderIdFinder(None);
        attrs.record(&mut finder);
        if let (Some(order_id), Some(span)) = (finder.0, ctx.span(id)) {
            span.extensions_mut().insert(OrderIdField(order_id));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let mut finder = OrderIdFinder(None);
        values.record(&mut finder);
        if let (Some(order_id), Some(span)) = (finder.0, ctx.span(id)) {
            span.extensions_mut().replace(OrderIdField(order_id));
        }
    }
}

struct OrderIdFinder(Option<String>);

impl Visit for OrderIdFinder {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == ORDER_ID {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == ORDER_ID {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// An event's fields as JSON values, secrets hidden.
struct JsonFields(Map<String, Value>);

impl JsonFields {
    /// Records `value`, or [`REDACTED`] when the field's name names a
    /// secret (whatever the value's type: a PIN is a number; only a boolean,
    /// which [`Visit::record_bool`] records itself, is no secret).
    fn insert(&mut self, field: &Field, value: Value) {
        let value = if is_secret_name(field.name()) {
            REDACTED.into()
        } else {
            value
        };
        self.0.insert(field.name().into(), value);
    }

    /// Records a text value with its URL credentials and secret pairs
    /// hidden.
    fn insert_text(&mut self, field: &Field, text: &str) {
        self.insert(field, redact(text).into_owned().into());
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        // Whether a secret is set (`admin_token = true`) is no secret.
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert_text(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert_text(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert_text(field, &format!("{value:?}"));
    }
}

/// The text format's fields (an event's, and each span's, which the line
/// repeats): the message as it is, then `name=value` pairs, text values
/// quoted, each separated by a space. Secrets are hidden and control
/// characters escaped, so whatever a field holds, it stays on its line.
///
/// Unlike the library's default, which it otherwise follows, it writes names
/// without ANSI styling.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> TextVisitor<'a> {
        TextVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

/// How [`TextVisitor`] writes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A string: quoted, as a Rust string literal (escapes and all), as the
    /// library's default does.
    Quoted,
    /// Anything else: as formatted, control characters escaped.
    Bare,
    /// A boolean: never hidden, even when its name names a secret, since
    /// whether one is set (`admin_token = true`) is no secret.
    Flag,
}

/// Writes one event's or span's fields for [`TextFields`].
pub(crate) struct TextVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: no separating space needed.
    empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Writes the field `field` with the value `text`, formatted as `shape`
    /// says.
    fn write_field(&mut self, field: &Field, text: &str, shape: Shape) {
        let name = field.name();
        // The metadata of records from the `log` crate, which the line's own
        // target already shows; the library's default skips it too.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let space = if self.empty { "" } else { " " };
        self.empty = false;
        if name == MESSAGE {
            let message = redact(text);
            self.result = write!(self.writer, "{space}{}", escape_control_chars(&message));
            return;
        }
        let secret = shape != Shape::Flag && is_secret_name(name);
        let value = if secret {
            Cow::Borrowed(REDACTED)
        } else {
            redact(text)
        };
        self.result = if shape == Shape::Quoted && !secret {
            write!(self.writer, "{space}{name}={value:?}")
        } else {
            let value = escape_control_chars(&value);
            write!(self.writer, "{space}{name}={value}")
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write_field(field, if value { "true" } else { "false" }, Shape::Flag);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.write_field(field, value, Shape::Quoted);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its sources, as `{:#}` shows an `anyhow` error.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            text.push_str(": ");
            text.push_str(&error.to_string());
            source = error.source();
        }
        self.write_field(field, &text, Shape::Bare);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_field(field, &format!("{value:?}"), Shape::Bare);
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn tracer() -> opentelemetry_sdk::trace::SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .build()
            .tracer("test")
    }

    fn lines(otel: bool, run: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let cell = SubscriberCell::default();
        let subscriber = tracing_subscriber::registry()
            .with(otel.then(|| tracing_opentelemetry::layer().with_tracer(tracer())))
            .with(OrderIdLayer::new(cell.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines::new("order", cell))
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, run);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The text format's output of `run`, as `init` sets it up (without
    /// colours).
    fn text(run: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .compact()
                .fmt_fields(TextFields)
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, run);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// An event with a secret, credentials in a URL and in a message, and
    /// newlines meant to forge a line, in a span with a secret of its own.
    fn leaky_event() {
        let span = tracing::info_span!("capture", api_key = "k-123", order_id = "o-1");
        let _span = span.enter();
        let database = "postgres://order:pw@127.0.0.1/order";
        let key = "k1\nINFO forged=line";
        tracing::warn!(
            jwt_secret = "s3cret",
            password = 4321,
            token_set = true,
            database,
            %key,
            note = "a\r\nb",
            "refused\nERROR forged token=t0k3n"
        );
    }

    #[test]
    fn text_lines_hide_secrets_and_stay_on_one_line() {
        let output = text(leaky_event);
        assert_eq!(output.lines().count(), 1, "{output}");
        for secret in ["s3cret", "pw@", "k-123", "t0k3n"] {
            assert!(!output.contains(secret), "{secret} in {output}");
        }
        assert!(
            output.contains("refused\\nERROR forged token=***"),
            "{output}"
        );
        assert!(
            output.contains(" jwt_secret=*** password=*** token_set=true "),
            "{output}"
        );
        assert!(
            output.contains(r#"database="postgres://order:***@127.0.0.1/order""#),
            "{output}"
        );
        assert!(output.contains("key=k1\\nINFO forged=line"), "{output}");
        assert!(output.contains(r#"note="a\r\nb""#), "{output}");
        assert!(output.contains("api_key=*** order_id=\"o-1\""), "{output}");
    }

    #[test]
    fn json_lines_hide_secrets_and_stay_valid() {
        // `lines` parses every line: a forged one would fail.
        let lines = lines(false, leaky_event);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["message"], "refused\nERROR forged token=***");
        assert_eq!(line["jwt_secret"], REDACTED);
        assert_eq!(line["password"], REDACTED);
        assert_eq!(line["token_set"], true);
        assert_eq!(line["database"], "postgres://order:***@127.0.0.1/order");
        assert_eq!(line["key"], "k1\nINFO forged=line");
        assert_eq!(line["order_id"], "o-1");
        assert!(!line.to_string().contains("s3cret"));
    }

    #[test]
    fn a_line_carries_its_fields_and_the_order_of_its_spans() {
        let lines = lines(false, || {
            let order = tracing::info_span!("handle", order_id = "o-1");
            let _order = order.enter();
            let inner = tracing::info_span!("step");
            let _inner = inner.enter();
            tracing::warn!(attempt = 2, ok = false, service = "inventory", "retrying");
        });
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["service"], "order", "the line's own service");
        assert_eq!(line["fields.service"], "inventory");
        assert_eq!(line["message"], "retrying");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["ok"], false);
        assert_eq!(line["span"], "step");
        assert_eq!(line["order_id"], "o-1");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        // No OpenTelemetry layer: no trace ids to report.
        assert!(line.get("trace_id").is_none());
    }

    #[test]
    fn an_event_naming_its_order_wins_and_lines_outside_spans_have_none() {
        let lines = lines(false, || {
            let span = tracing::info_span!("handle", order_id = "o-1");
            span.in_scope(|| tracing::info!(order_id = "o-2", "moved"));
            tracing::info!("idle");
        });
        assert_eq!(lines[0]["order_id"], "o-2");
        assert!(lines[1].get("order_id").is_none());
        assert!(lines[1].get("span").is_none());
    }

    #[test]
    fn a_line_in_a_traced_span_carries_the_span_s_trace_and_span_id() {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;

        let mut expected = None;
        let lines = lines(true, || {
            let span = tracing::info_span!("handle", order_id = "o-1");
            let context = span.context();
            let otel = context.span();
            let ids = otel.span_context();
            expected = Some((ids.trace_id().to_string(), ids.span_id().to_string()));
            span.in_scope(|| tracing::info!("inside"));
            tracing::info!("outside");
        });
        let (trace_id, span_id) = expected.unwrap();
        assert_eq!(trace_id.len(), 32);
        assert_eq!(lines[0]["trace_id"], trace_id.as_str());
        assert_eq!(lines[0]["span_id"], span_id.as_str());
        assert_eq!(lines[0]["order_id"], "o-1");
        assert!(lines[1].get("trace_id").is_none());
    }
}
