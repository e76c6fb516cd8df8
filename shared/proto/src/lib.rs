//! Generated gRPC APIs and saga events, plus [`Event`]: the closed set of
//! event payloads with their wire names and topics.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod shipshape {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("shipshape.common.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            tonic::include_proto!("shipshape.inventory.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("shipshape.order.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("shipshape.events.v1");
        }
    }
}

pub use shipshape::common::v1 as common;
pub use shipshape::events::v1 as events;
pub use shipshape::inventory::v1 as inventory;
pub use shipshape::order::v1 as order;

use prost::Message;

/// The encoded `FileDescriptorSet` of every Shipshape proto file, which the
/// gRPC servers offer through server reflection (so `grpcurl` needs no
/// `.proto` files).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptors");

/// gRPC response metadata key carrying a stable, machine-readable error code
/// (`unknown_sku`, `idempotency_key_reused`, ...) beside the status.
pub const ERROR_CODE_METADATA: &str = "x-error-code";

/// A status whose metadata carries `error_code` (see [`ERROR_CODE_METADATA`]).
pub fn error_status(
    code: tonic::Code,
    error_code: &'static str,
    message: impl Into<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_METADATA,
        tonic::metadata::MetadataValue::from_static(error_code),
    );
    status
}

/// Topic of the order service's events.
pub const ORDER_EVENTS: &str = "order.events";
/// Topic of the inventory service's events.
pub const INVENTORY_EVENTS: &str = "inventory.events";
/// Topic of the payment service's events.
pub const PAYMENT_EVENTS: &str = "payment.events";
/// Topic of the shipping service's events.
pub const SHIPPING_EVENTS: &str = "shipping.events";

/// Where a service sends a message it cannot apply (after its attempts, or
/// at once when it can never be applied), with the reason in its headers.
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";

/// What one event-driven service does on the broker: the topic it
/// publishes on (it is that topic's only publisher) and the topics it
/// consumes. The broker's access rules are made from these, and the
/// services subscribe by them, so the two cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// The service's name, and its principal's on the broker.
    pub service: &'static str,
    pub publishes: &'static str,
    pub consumes: &'static [&'static str],
    /// Topics it reads from their beginning, outside any consumer group,
    /// to rebuild a read model (the order service's timelines read all
    /// four, its own included).
    pub replays: &'static [&'static str],
}

pub const ORDER_ROLE: Role = Role {
    service: "order",
    publishes: ORDER_EVENTS,
    consumes: &[INVENTORY_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS],
    replays: &[
        ORDER_EVENTS,
        INVENTORY_EVENTS,
        PAYMENT_EVENTS,
        SHIPPING_EVENTS,
    ],
};
pub const INVENTORY_ROLE: Role = Role {
    service: "inventory",
    publishes: INVENTORY_EVENTS,
    consumes: &[ORDER_EVENTS, PAYMENT_EVENTS, SHIPPING_EVENTS],
    replays: &[],
};
pub const PAYMENT_ROLE: Role = Role {
    service: "payment",
    publishes: PAYMENT_EVENTS,
    consumes: &[ORDER_EVENTS, INVENTORY_EVENTS, SHIPPING_EVENTS],
    replays: &[],
};
pub const SHIPPING_ROLE: Role = Role {
    service: "shipping",
    publishes: SHIPPING_EVENTS,
    consumes: &[ORDER_EVENTS, PAYMENT_EVENTS],
    replays: &[],
};

/// The gateway's name: its certificate names it so for the gRPC services
/// it calls, which let it in by that name.
pub const GATEWAY: &str = "gateway";

/// Every service that uses the broker. The gateway is not one of them.
pub const ROLES: [Role; 4] = [ORDER_ROLE, INVENTORY_ROLE, PAYMENT_ROLE, SHIPPING_ROLE];

/// The service that publishes on `topic`; `None` for a topic not of ours.
/// It is the only `producer` an envelope on that topic may name.
pub fn producer_of(topic: &str) -> Option<&'static str> {
    ROLES
        .iter()
        .find(|role| role.publishes == topic)
        .map(|role| role.service)
}

/// An envelope whose payload could not be turned into an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("malformed `{event_type}` payload: {source}")]
    Malformed {
        event_type: String,
        source: prost::DecodeError,
    },
}

macro_rules! saga_events {
    ($($name:ident => $topic:expr),+ $(,)?) => {
        /// Every saga event payload, tagged by its type.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            $($name(events::$name),)+
        }

        impl Event {
            /// Every event's wire name with the topic it is published on.
            pub const TYPES: &[(&'static str, &'static str)] = &[$((stringify!($name), $topic),)+];

            /// The wire name carried in `Envelope::event_type`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Event::$name(_) => stringify!($name),)+
                }
            }

            /// The topic this event is published on: its producer's.
            pub fn topic(&self) -> &'static str {
                match self {
                    $(Event::$name(_) => $topic,)+
                }
            }

            pub fn encode_payload(&self) -> Vec<u8> {
                match self {
                    $(Event::$name(payload) => payload.encode_to_vec(),)+
                }
            }

            pub fn decode(event_type: &str, payload: &[u8]) -> Result<Self, EventDecodeError> {
                match event_type {
                    $(stringify!($name) => events::$name::decode(payload)
                        .map(Event::$name)
                        .map_err(|source| EventDecodeError::Malformed {
                            event_type: event_type.to_owned(),
                            source,
                        }),)+
                    other => Err(EventDecodeError::UnknownType(other.to_owned())),
                }
            }
        }
    };
}

saga_events! {
    OrderPlaced => ORDER_EVENTS,
    OrderConfirmed => ORDER_EVENTS,
    OrderCancelled => ORDER_EVENTS,
    StockReserved => INVENTORY_EVENTS,
    StockRejected => INVENTORY_EVENTS,
    StockReleased => INVENTORY_EVENTS,
    PaymentCaptured => PAYMENT_EVENTS,
    PaymentDeclined => PAYMENT_EVENTS,
    PaymentRefunded => PAYMENT_EVENTS,
    PaymentVoided => PAYMENT_EVENTS,
    ShipmentScheduled => SHIPPING_EVENTS,
    ShipmentFailed => SHIPPING_EVENTS,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_its_type_name() {
        let event = Event::StockRejected(events::StockRejected {
            reason: "out_of_stock".into(),
            skus: vec!["SKU-0001".into()],
        });
        let decoded = Event::decode(event.type_name(), &event.encode_payload()).unwrap();
        assert_eq!(decoded, event);
        assert_eq!(event.topic(), INVENTORY_EVENTS);
        assert!(Event::TYPES.contains(&(event.type_name(), event.topic())));
        assert_eq!(Event::TYPES.len(), 12);
    }

    #[test]
    fn unknown_type_and_garbage_are_errors() {
        assert!(matches!(
            Event::decode("OrderTeleported", &[]),
            Err(EventDecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Event::decode("OrderPlaced", &[0xff, 0xff, 0xff]),
            Err(EventDecodeError::Malformed { .. })
        ));
    }
}
