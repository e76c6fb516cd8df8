//! Sealing events into the protobuf envelope and opening them again.

use prost::Message;
use shipshape_proto::events::Envelope;
use shipshape_proto::{Event, EventDecodeError, producer_of};
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

impl Incoming {
    /// The envelope that carries this event.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            event_id: self.event_id.to_string(),
            event_type: self.event.type_name().to_owned(),
            order_id: self.order_id.to_string(),
            occurred_at_micros: self.occurred_at_micros,
            producer: self.producer.clone(),
            payload: self.event.encode_payload(),
        }
    }
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

/// `event` as a new event of `producer`'s: a fresh event id, occurring now.
pub fn stamp(producer: &str, order_id: OrderId, event: Event) -> Incoming {
    Incoming {
        event_id: Uuid::now_v7(),
        order_id,
        occurred_at_micros: chrono::Utc::now().timestamp_micros(),
        producer: producer.to_owned(),
        event,
    }
}

/// Wraps `event` in a new envelope with a fresh event id.
pub fn seal(producer: &str, order_id: OrderId, event: &Event) -> Envelope {
    stamp(producer, order_id, event.clone()).envelope()
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

/// Checks that `incoming` belongs on `topic`, the topic (without prefix) it
/// arrived on: that topic carries its event type, and its producer is the
/// service that publishes there. The `producer` field is the sender's word,
/// so this cannot stop a writer of a topic from sending that topic's own
/// events; with each service's broker credentials limited to its own topic
/// (ACLs), it stops a service, or whoever holds its credentials, from
/// passing off another service's events. The error is the dead letter's
/// reason.
pub fn check_provenance(incoming: &Incoming, topic: &str) -> Result<(), String> {
    let event_type = incoming.event.type_name();
    let home = incoming.event.topic();
    if home != topic {
        return Err(format!(
            "provenance: `{event_type}` events belong on {home}, not on {topic}"
        ));
    }
    let publisher = producer_of(topic).unwrap_or_default();
    if incoming.producer != publisher {
        return Err(format!(
            "provenance: events on {topic} come from `{publisher}`, not from `{}`",
            incoming.producer
        ));
    }
    Ok(())
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

    fn arriving(producer: &str, event: Event) -> Incoming {
        open(&seal(producer, OrderId::generate(), &event).encode_to_vec()).unwrap()
    }

    #[test]
    fn an_event_is_applied_only_from_its_own_topic_and_its_publisher() {
        let shipped = || Event::ShipmentScheduled(Default::default());
        let cancelled = || {
            Event::OrderCancelled(events::OrderCancelled {
                reason: "timed_out".into(),
            })
        };
        assert_eq!(
            check_provenance(&arriving("shipping", shipped()), "shipping.events"),
            Ok(())
        );
        assert_eq!(
            check_provenance(&arriving("order", cancelled()), "order.events"),
            Ok(())
        );
        // The two forgeries, each written where its writer may write.
        assert_eq!(
            check_provenance(&arriving("payment", shipped()), "payment.events"),
            Err(
                "provenance: `ShipmentScheduled` events belong on shipping.events, \
                 not on payment.events"
                    .to_owned()
            )
        );
        assert_eq!(
            check_provenance(&arriving("shipping", cancelled()), "shipping.events"),
            Err(
                "provenance: `OrderCancelled` events belong on order.events, not on shipping.events"
                    .to_owned()
            )
        );
        // The right topic, with another service's name on it.
        assert_eq!(
            check_provenance(&arriving("shipping", cancelled()), "order.events"),
            Err(
                "provenance: events on order.events come from `order`, not from `shipping`"
                    .to_owned()
            )
        );
    }
}
