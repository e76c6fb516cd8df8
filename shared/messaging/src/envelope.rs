//! Sealing events into the protobuf envelope and opening them again.

use prost::Message;
use shipshape_proto::events::Envelope;
use shipshape_proto::{Event, EventDecodeError};
use shipshape_types::OrderId;
use uuid::Uuid;

/// A decoded event as a handler sees it.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub occurred_at_micros: i64,
    pub producer: String,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not an event envelope: {0}")]
    Envelope(#[from] prost::DecodeError),
    #[error("envelope field `{field}` is invalid: `{value}`")]
    Field { field: &'static str, value: String },
    #[error(transparent)]
    Payload(#[from] EventDecodeError),
}

/// Wraps `event` in a new envelope with a fresh event id.
pub fn seal(producer: &str, order_id: OrderId, event: &Event) -> Envelope {
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: event.type_name().to_owned(),
        order_id: order_id.to_string(),
        occurred_at_micros: chrono::Utc::now().timestamp_micros(),
        producer: producer.to_owned(),
        payload: event.encode_payload(),
    }
}

/// Decodes an envelope and its payload from a message body.
pub fn open(bytes: &[u8]) -> Result<Incoming, OpenError> {
    let envelope = Envelope::decode(bytes)?;
    let event_id = Uuid::parse_str(&envelope.event_id).map_err(|_| OpenError::Field {
        field: "event_id",
        value: envelope.event_id.clone(),
    })?;
    let order_id = envelope.order_id.parse().map_err(|_| OpenError::Field {
        field: "order_id",
        value: envelope.order_id.clone(),
    })?;
    let event = Event::decode(&envelope.event_type, &envelope.payload)?;
    Ok(Incoming {
        event_id,
        order_id,
        occurred_at_micros: envelope.occurred_at_micros,
        producer: envelope.producer,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_proto::events;

    #[test]
    fn sealed_events_open_to_the_same_event() {
        let order_id = OrderId::generate();
        let event = Event::OrderCancelled(events::OrderCancelled {
            reason: "timed_out".into(),
        });
        let envelope = seal("order", order_id, &event);
        let incoming = open(&envelope.encode_to_vec()).unwrap();
        assert_eq!(incoming.order_id, order_id);
        assert_eq!(incoming.event, event);
        assert_eq!(incoming.producer, "order");
        assert_eq!(incoming.event_id.to_string(), envelope.event_id);
    }

    #[test]
    fn garbage_and_bad_ids_are_rejected() {
        assert!(matches!(open(b"\xff\xff\xff"), Err(OpenError::Envelope(_))));
        let mut envelope = seal(
            "order",
            OrderId::generate(),
            &Event::StockReserved(Default::default()),
        );
        envelope.order_id = "not-a-uuid".into();
        assert!(matches!(
            open(&envelope.encode_to_vec()),
            Err(OpenError::Field {
                field: "order_id",
                ..
            })
        ));
    }
}
