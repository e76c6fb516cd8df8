//! Dead-lettering: a message that cannot be decoded or keeps failing is
//! published unchanged to the dead-letter topic, with where it came from
//! and why.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::Handler;
use super::worker::{RETRY_BACKOFF, Worker};

impl<H: Handler> Worker<H> {
    /// Publishes the message unchanged to the dead-letter topic, with where it
    /// came from and why in headers. Retries until the broker takes it.
    pub(super) async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> bool {
        let reason = capped(reason, MAX_REASON_BYTES);
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettering message"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "dlq.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq.source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dlq.consumer.group",
                value: Some(&self.group),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(reason),
            });
        // A message near the broker's size limit no longer fits once the
        // headers are added; it is then dead-lettered without its body
        // rather than retried forever, which would stop the partition.
        let mut dropped: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut record = FutureRecord::to(&self.dead_letter_topic);
            match &dropped {
                None => {
                    record = record.headers(headers.clone());
                    if let Some(key) = message.key() {
                        record = record.key(key);
                    }
                    if let Some(payload) = message.payload() {
                        record = record.payload(payload);
                    }
                }
                Some(sizes) => {
                    record = record.headers(headers.clone().insert(Header {
                        key: "dlq.body.dropped",
                        value: Some(sizes),
                    }))
                }
            }
            match self
                .dead_letters
                .send(record, Duration::from_secs(10))
                .await
            {
                Ok(_) => {
                    metrics::counter!(crate::DEAD_LETTERS, "topic" => message.topic().to_owned())
                        .increment(1);
                    return true;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if dropped.is_none() =>
                {
                    let sizes = format!(
                        "too large for the dead-letter topic: key {} bytes, payload {} bytes",
                        message.key().map_or(0, <[u8]>::len),
                        message.payload().map_or(0, <[u8]>::len)
                    );
                    tracing::warn!(%sizes, "dead-lettering without the message's key and payload");
                    dropped = Some(sizes);
                    continue;
                }
                Err((error, _)) => tracing::warn!(%error, "dead-letter publish failed"),
            }
            if let Some((code, reason)) = self.dead_letters.client().fatal_error() {
                // The producer will never recover; stopping this worker ends
                // the consumer, and with it the process, so it is restarted.
                tracing::error!(?code, reason, "producer failed fatally");
                return false;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(RETRY_BACKOFF.delay(attempt)) => {}
            }
        }
    }
}

/// The longest `dlq.error` header: a reason quotes the offending value,
/// which a hostile message can make as large as the message itself.
const MAX_REASON_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes, on a character boundary.
fn capped(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
