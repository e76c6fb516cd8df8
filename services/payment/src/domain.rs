//! A payment's life, free of I/O: what the service has learned decides
//! whether to capture, refund, void or wait, and what to tell the others.

use shipshape_types::text_enum;

text_enum! {
    #[derive(Default)]
    pub enum PaymentStatus {
        /// Waiting for the order's details and its stock reservation.
        #[default]
        Waiting => "WAITING",
        CapturePending => "CAPTURE_PENDING",
        Captured => "CAPTURED",
        Declined => "DECLINED",
        RefundPending => "REFUND_PENDING",
        Refunded => "REFUNDED",
        /// Cancelled before any capture could have charged the card.
        Voided => "VOIDED",
    }
}

/// What the payment service knows of one order's payment.
/// A new one knows nothing yet: waiting, with every fact false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Payment {
    pub status: PaymentStatus,
    /// OrderPlaced was seen: amount and card token are known.
    pub has_details: bool,
    pub stock_reserved: bool,
    /// The order was cancelled or its shipment failed.
    pub compensate: bool,
    /// Some capture attempt may have charged the card.
    pub capture_uncertain: bool,
    /// A PSP call is under way right now.
    pub in_flight: bool,
}

/// What the other services must be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Captured,
    Declined(String),
    Refunded,
    Voided,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PspCall {
    Capture,
    Refund,
    /// Ask what was decided under the capture's key: for a payment that
    /// should no longer be captured but may have been.
    LookUpCapture,
}

/// The PSP's answer to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Captured,
    Declined(String),
    Refunded,
    /// The PSP said it did not process the request (or was never reached).
    NotProcessed,
    /// The PSP has no capture under the payment's key: none was ever made.
    NeverCaptured,
    /// No answer: the request may or may not have been processed.
    Unknown,
}

impl Payment {
    /// Moves the payment as far as its facts allow without calling the PSP.
    pub fn settle(&mut self) -> Vec<Notice> {
        use PaymentStatus::*;
        let mut notices = Vec::new();
        loop {
            self.status = match self.status {
                Waiting if self.compensate => {
                    notices.push(Notice::Voided);
                    Voided
                }
                Waiting if self.has_details && self.stock_reserved => CapturePending,
                // Voiding is safe only if no capture can have reached the PSP.
                CapturePending if self.compensate && !self.capture_uncertain && !self.in_flight => {
                    notices.push(Notice::Voided);
                    Voided
                }
                Captured if self.compensate => RefundPending,
                _ => return notices,
            };
        }
    }

    /// The PSP call the payment is waiting for, if any.
    pub fn pending_call(&self) -> Option<PspCall> {
        match self.status {
            PaymentStatus::CapturePending if self.compensate && self.capture_uncertain => {
                Some(PspCall::LookUpCapture)
            }
            PaymentStatus::CapturePending => Some(PspCall::Capture),
            PaymentStatus::RefundPending => Some(PspCall::Refund),
            _ => None,
        }
    }

    /// Applies the answer to the call [`Payment::pending_call`] asked for.
    pub fn record(&mut self, result: CallResult) -> Vec<Notice> {
        use PaymentStatus::*;
        self.in_flight = false;
        let mut notices = Vec::new();
        match (self.status, result) {
            (CapturePending, CallResult::Captured) => {
                self.status = Captured;
                notices.push(Notice::Captured);
            }
            (CapturePending, CallResult::Declined(reason)) => {
                self.status = Declined;
                notices.push(Notice::Declined(reason));
            }
            (CapturePending, CallResult::Unknown) => self.capture_uncertain = true,
            (CapturePending, CallResult::NeverCaptured) => self.capture_uncertain = false,
            // Money was taken although the payment was already given up (a
            // stale answer arriving late): it must go back.
            (Voided | Declined, CallResult::Captured) => {
                self.status = Captured;
                self.compensate = true;
                notices.push(Notice::Captured);
            }
            (RefundPending, CallResult::Refunded) => {
                self.status = Refunded;
                notices.push(Notice::Refunded);
            }
            _ => {}
        }
        notices.extend(self.settle());
        notices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    fn ready() -> Payment {
        let mut p = Payment {
            has_details: true,
            stock_reserved: true,
            ..Payment::default()
        };
        assert!(p.settle().is_empty());
        p
    }

    #[test]
    fn capture_starts_only_with_details_and_stock_in_any_order() {
        let mut p = Payment {
            stock_reserved: true,
            ..Payment::default()
        };
        p.settle();
        assert_eq!(p.status, Waiting);
        p.has_details = true;
        p.settle();
        assert_eq!(p.status, CapturePending);
        assert_eq!(p.pending_call(), Some(PspCall::Capture));
    }

    #[test]
    fn capture_and_decline_are_announced() {
        let mut p = ready();
        assert_eq!(p.record(CallResult::Captured), [Notice::Captured]);
        assert_eq!(p.status, Captured);
        let mut p = ready();
        assert_eq!(
            p.record(CallResult::Declined("card_declined".into())),
            [Notice::Declined("card_declined".into())]
        );
        assert_eq!(p.pending_call(), None);
    }

    #[test]
    fn cancellation_before_capture_voids() {
        let mut p = Payment {
            compensate: true,
            ..Payment::default()
        };
        assert_eq!(p.settle(), [Notice::Voided]);
        let mut p = ready();
        p.compensate = true;
        assert_eq!(p.settle(), [Notice::Voided]);
        // A later StockReserved changes nothing.
        p.stock_reserved = true;
        assert!(p.settle().is_empty());
        assert_eq!(p.status, Voided);
    }

    #[test]
    fn a_call_in_flight_or_an_unanswered_one_forbids_voiding() {
        let mut p = ready();
        p.in_flight = true;
        p.compensate = true;
        assert!(p.settle().is_empty());
        assert_eq!(p.record(CallResult::Unknown), []);
        assert_eq!(
            p.status, CapturePending,
            "may have charged: must capture then refund"
        );
        assert_eq!(p.record(CallResult::Captured), [Notice::Captured]);
        assert_eq!(p.status, RefundPending);
        assert_eq!(p.record(CallResult::Refunded), [Notice::Refunded]);
        assert_eq!(p.status, Refunded);
    }

    #[test]
    fn an_uncertain_capture_of_a_cancelled_order_is_looked_up_then_voided_or_refunded() {
        let mut p = ready();
        p.record(CallResult::Unknown);
        p.compensate = true;
        assert!(p.settle().is_empty());
        assert_eq!(p.pending_call(), Some(PspCall::LookUpCapture));
        let mut never = p;
        assert_eq!(never.record(CallResult::NeverCaptured), [Notice::Voided]);
        assert_eq!(never.status, Voided);
        assert_eq!(p.record(CallResult::Captured), [Notice::Captured]);
        assert_eq!(p.pending_call(), Some(PspCall::Refund));
    }

    #[test]
    fn an_uncertain_capture_of_a_live_order_is_simply_retried() {
        let mut p = ready();
        p.record(CallResult::Unknown);
        assert_eq!(
            p.pending_call(),
            Some(PspCall::Capture),
            "the same key cannot charge twice"
        );
    }

    #[test]
    fn a_refused_call_with_compensation_pending_voids() {
        let mut p = ready();
        p.in_flight = true;
        p.compensate = true;
        assert_eq!(p.record(CallResult::NotProcessed), [Notice::Voided]);
    }

    #[test]
    fn late_capture_after_cancellation_is_refunded() {
        let mut p = ready();
        p.in_flight = true;
        p.compensate = true;
        assert_eq!(p.record(CallResult::Captured), [Notice::Captured]);
        assert_eq!(p.pending_call(), Some(PspCall::Refund));
    }

    #[test]
    fn a_capture_reported_after_a_void_is_refunded() {
        let mut p = Payment {
            status: Voided,
            compensate: true,
            ..Payment::default()
        };
        assert_eq!(p.record(CallResult::Captured), [Notice::Captured]);
        assert_eq!(p.pending_call(), Some(PspCall::Refund));
        let mut p = Payment {
            status: Declined,
            ..Payment::default()
        };
        p.record(CallResult::Captured);
        assert_eq!(p.status, RefundPending);
    }

    #[test]
    fn settled_payments_ignore_further_compensation() {
        for terminal in [Declined, Refunded, Voided] {
            let mut p = Payment {
                status: terminal,
                compensate: true,
                ..Payment::default()
            };
            assert!(p.settle().is_empty());
            assert_eq!(p.status, terminal);
        }
    }
}
