//! The checkout load generator. Its first mode places orders one at a time
//! and times each from `POST /api/v1/orders` to a terminal status, both as
//! the client sees it (polling) and as the order's own timestamps record it.
#![forbid(unsafe_code)]

pub mod sequential;
pub mod stats;
