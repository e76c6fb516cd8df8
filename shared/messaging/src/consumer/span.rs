//! The trace span of handling one consumed message, continuing the trace
//! of the span that published it.

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use tracing::field::Empty;

use shipshape_telemetry::TraceContext;

/// The span of handling one message: a child of the span that published it
/// (see `outbox`), so the whole checkout is one trace. A child rather than a
/// link because each message's effect is its own step of the one piece of
/// work that sent it, even when a batch of them commits together: each
/// effect runs in its message's span, and only the commit is shared.
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
