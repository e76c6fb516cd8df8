//! The trace span of handling one consumed message, continuing the trace
//! of the span that published it.

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use tracing::field::Empty;

use shipshape_telemetry::TraceContext;

/// The span of handling one message: a child of the span that published it
/// (see `outbox`), so the whole checkout is one trace. A child rather than a
/// link because each message is handled on its own, as the next step of the
/// one piece of work that sent it; a link would suit a span that handles a
/// batch of unrelated messages, which this consumer never does.
pub(super) fn process_span(message: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "message.process",
        otel.name = %format_args!("{} process", message.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.message.id = Empty,
        event_type = Empty,
        order_id = Empty,
    );
    if let Some(headers) = message.headers() {
        TraceContext::from_pairs(
            headers
                .iter()
                .filter_map(|header| Some((header.key, header.value?))),
        )
        .adopt(&span);
    }
    span
}
