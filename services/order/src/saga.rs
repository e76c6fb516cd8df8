//! The order's view of the checkout saga, free of I/O.
//!
//! The order service tracks what it has observed of each other service's
//! part and decides the outcome: CONFIRMED when a shipment is scheduled, or
//! CANCELLING → CANCELLED. Events from different topics can arrive in any
//! order, so every observation only moves forward, and CANCELLED is reached
//! only once every compensation the order needs has been observed.

use shipshape_proto::{Event, events};
use shipshape_types::text_enum;

text_enum! {
    /// The status clients see.
    pub enum OrderStatus {
        Pending => "PENDING",
        Confirmed => "CONFIRMED",
        Cancelling => "CANCELLING",
        Cancelled => "CANCELLED",
    }
}

text_enum! {
    pub enum CancelReason {
        OutOfStock => "out_of_stock",
        PaymentDeclined => "payment_declined",
        ShippingFailed => "shipping_failed",
        TimedOut => "timed_out",
    }
}

text_enum! {
    /// What the order knows of its stock reservation.
    pub enum StockState {
        Unknown => "UNKNOWN",
        Reserved => "RESERVED",
        Rejected => "REJECTED",
        Released => "RELEASED",
    }
}

text_enum! {
    /// What the order knows of its payment.
    pub enum PaymentState {
        Unknown => "UNKNOWN",
        Captured => "CAPTURED",
        Declined => "DECLINED",
        Refunded => "REFUNDED",
        /// Cancelled before any capture could have been attempted.
        Voided => "VOIDED",
    }
}

text_enum! {
    /// What the order knows of its shipment.
    pub enum ShipmentState {
        Unknown => "UNKNOWN",
        Scheduled => "SCHEDULED",
        Failed => "FAILED",
    }
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Confirmed | OrderStatus::Cancelled)
    }
}

/// Something the order learns: another service's event, or its own deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    StockReserved,
    StockRejected,
    StockReleased,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    PaymentVoided,
    ShipmentScheduled,
    ShipmentFailed,
    DeadlinePassed,
}

impl Observation {
    /// The observation an event carries, if the order cares about it.
    pub fn from_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::StockReserved(_) => Observation::StockReserved,
            Event::StockRejected(_) => Observation::StockRejected,
            Event::StockReleased(_) => Observation::StockReleased,
            Event::PaymentCaptured(_) => Observation::PaymentCaptured,
            Event::PaymentDeclined(_) => Observation::PaymentDeclined,
            Event::PaymentRefunded(_) => Observation::PaymentRefunded,
            Event::PaymentVoided(_) => Observation::PaymentVoided,
            Event::ShipmentScheduled(_) => Observation::ShipmentScheduled,
            Event::ShipmentFailed(_) => Observation::ShipmentFailed,
            Event::OrderPlaced(_) | Event::OrderConfirmed(_) | Event::OrderCancelled(_) => {
                return None;
            }
        })
    }
}

/// One order's saga state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saga {
    pub status: OrderStatus,
    pub reason: Option<CancelReason>,
    pub stock: StockState,
    pub payment: PaymentState,
    pub shipment: ShipmentState,
}

impl Saga {
    /// A freshly placed order.
    pub fn placed() -> Self {
        Self {
            status: OrderStatus::Pending,
            reason: None,
            stock: StockState::Unknown,
            payment: PaymentState::Unknown,
            shipment: ShipmentState::Unknown,
        }
    }

    /// Records `observation` and returns the events the order must publish.
    pub fn observe(&mut self, observation: Observation) -> Vec<Event> {
        let mut emit = Vec::new();
        match observation {
            Observation::StockReserved if self.stock == StockState::Unknown => {
                self.stock = StockState::Reserved;
            }
            Observation::StockRejected => {
                self.stock = StockState::Rejected;
                self.cancel(CancelReason::OutOfStock, &mut emit);
            }
            Observation::StockReleased => self.stock = StockState::Released,
            Observation::PaymentCaptured if self.payment == PaymentState::Unknown => {
                self.payment = PaymentState::Captured;
            }
            Observation::PaymentDeclined => {
                self.payment = PaymentState::Declined;
                self.cancel(CancelReason::PaymentDeclined, &mut emit);
            }
            Observation::PaymentRefunded => self.payment = PaymentState::Refunded,
            Observation::PaymentVoided if self.payment == PaymentState::Unknown => {
                self.payment = PaymentState::Voided;
            }
            Observation::ShipmentScheduled => {
                self.shipment = ShipmentState::Scheduled;
                if self.status == OrderStatus::Pending {
                    self.status = OrderStatus::Confirmed;
                    emit.push(Event::OrderConfirmed(events::OrderConfirmed {}));
                }
            }
            Observation::ShipmentFailed => {
                self.shipment = ShipmentState::Failed;
                self.cancel(CancelReason::ShippingFailed, &mut emit);
            }
            Observation::DeadlinePassed => self.cancel(CancelReason::TimedOut, &mut emit),
            // A late duplicate of an earlier step (e.g. captured after refunded).
            _ => {}
        }
        if self.status == OrderStatus::Cancelling && self.compensated() {
            self.status = OrderStatus::Cancelled;
        }
        emit
    }

    /// Only a pending order can start cancelling: the first failure decides.
    fn cancel(&mut self, reason: CancelReason, emit: &mut Vec<Event>) {
        if self.status == OrderStatus::Pending {
            self.status = OrderStatus::Cancelling;
            self.reason = Some(reason);
            emit.push(Event::OrderCancelled(events::OrderCancelled {
                reason: reason.as_str().to_owned(),
            }));
        }
    }

    /// The order holds no stock and no money. Rejected stock means payment
    /// never started; released stock still needs the payment side settled:
    /// declined, refunded, or voided before any capture.
    fn compensated(&self) -> bool {
        match self.stock {
            StockState::Rejected => true,
            StockState::Released => matches!(
                self.payment,
                PaymentState::Declined | PaymentState::Refunded | PaymentState::Voided
            ),
            StockState::Unknown | StockState::Reserved => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Observation::*;
    use super::*;

    fn run(observations: &[Observation]) -> (Saga, Vec<&'static str>) {
        let mut saga = Saga::placed();
        let mut emitted = Vec::new();
        for o in observations {
            emitted.extend(saga.observe(*o).iter().map(Event::type_name));
        }
        (saga, emitted)
    }

    #[test]
    fn happy_path_confirms_once() {
        let (saga, emitted) = run(&[
            StockReserved,
            PaymentCaptured,
            ShipmentScheduled,
            ShipmentScheduled,
        ]);
        assert_eq!(saga.status, OrderStatus::Confirmed);
        assert_eq!(emitted, ["OrderConfirmed"]);
    }

    #[test]
    fn out_of_stock_cancels_at_once() {
        let (saga, emitted) = run(&[StockRejected]);
        assert_eq!(saga.status, OrderStatus::Cancelled);
        assert_eq!(saga.reason, Some(CancelReason::OutOfStock));
        assert_eq!(emitted, ["OrderCancelled"]);
    }

    #[test]
    fn declined_payment_waits_for_the_stock_to_come_back() {
        let (saga, _) = run(&[StockReserved, PaymentDeclined]);
        assert_eq!(saga.status, OrderStatus::Cancelling);
        let (saga, emitted) = run(&[StockReserved, PaymentDeclined, StockReleased]);
        assert_eq!(saga.status, OrderStatus::Cancelled);
        assert_eq!(saga.reason, Some(CancelReason::PaymentDeclined));
        assert_eq!(emitted, ["OrderCancelled"]);
    }

    #[test]
    fn failed_shipment_needs_refund_and_release_in_either_order() {
        for tail in [
            [StockReleased, PaymentRefunded],
            [PaymentRefunded, StockReleased],
        ] {
            let mut steps = vec![StockReserved, PaymentCaptured, ShipmentFailed];
            steps.push(tail[0]);
            let (saga, _) = run(&steps);
            assert_eq!(saga.status, OrderStatus::Cancelling, "{steps:?}");
            steps.push(tail[1]);
            let (saga, _) = run(&steps);
            assert_eq!(saga.status, OrderStatus::Cancelled, "{steps:?}");
            assert_eq!(saga.reason, Some(CancelReason::ShippingFailed));
        }
    }

    #[test]
    fn deadline_then_late_capture_waits_for_the_refund() {
        let (saga, emitted) = run(&[
            StockReserved,
            DeadlinePassed,
            StockReleased,
            PaymentCaptured,
        ]);
        assert_eq!(saga.status, OrderStatus::Cancelling);
        assert_eq!(emitted, ["OrderCancelled"]);
        let (saga, _) = run(&[
            StockReserved,
            DeadlinePassed,
            StockReleased,
            PaymentCaptured,
            PaymentRefunded,
        ]);
        assert_eq!(saga.status, OrderStatus::Cancelled);
        assert_eq!(saga.reason, Some(CancelReason::TimedOut));
    }

    #[test]
    fn deadline_before_capture_ends_on_void() {
        let (saga, _) = run(&[DeadlinePassed, StockReserved, StockReleased, PaymentVoided]);
        assert_eq!(saga.status, OrderStatus::Cancelled);
    }

    #[test]
    fn a_late_shipment_does_not_confirm_a_cancelling_order() {
        let (saga, emitted) = run(&[
            StockReserved,
            PaymentCaptured,
            DeadlinePassed,
            ShipmentScheduled,
        ]);
        assert_eq!(saga.status, OrderStatus::Cancelling);
        assert_eq!(emitted, ["OrderCancelled"]);
    }

    #[test]
    fn the_deadline_does_not_touch_a_decided_order() {
        let (saga, emitted) = run(&[
            StockReserved,
            PaymentCaptured,
            ShipmentScheduled,
            DeadlinePassed,
        ]);
        assert_eq!(saga.status, OrderStatus::Confirmed);
        assert_eq!(emitted, ["OrderConfirmed"]);
        let (saga, emitted) = run(&[StockRejected, DeadlinePassed]);
        assert_eq!(saga.reason, Some(CancelReason::OutOfStock));
        assert_eq!(emitted, ["OrderCancelled"]);
    }

    #[test]
    fn observations_never_move_backwards() {
        let (saga, _) = run(&[StockReserved, StockReleased, StockReserved]);
        assert_eq!(saga.stock, StockState::Released);
        let (saga, _) = run(&[PaymentCaptured, PaymentRefunded, PaymentCaptured]);
        assert_eq!(saga.payment, PaymentState::Refunded);
        let (saga, _) = run(&[PaymentVoided, PaymentCaptured]);
        assert_eq!(saga.payment, PaymentState::Voided);
    }
}
