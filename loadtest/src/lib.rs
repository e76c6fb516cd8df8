//! The checkout load generator: drives the public gateway API the way
//! shoppers do and reports what the system sustains and where it breaks.
//!
//! - [`run`]: the open model (checkouts arrive on a [`schedule`], whatever
//!   the system does; latencies count from when each was due, so a slow
//!   system cannot hide its queueing) or the closed model (N shoppers);
//! - [`checkout`]: one checkout (list, view, place, poll until terminal)
//!   along a [`scenario`] path, counted by the [`recorder`];
//! - [`capacity`]: steps the rate up until the SLO breaks;
//! - [`baseline`]: the same writes as one transaction with pgbench;
//! - [`procstat`]: memory and CPU of the processes under test;
//! - [`cost`]: what one checkout costs in messages, calls, commits and CPU;
//! - [`report`]: text, JSON and an SVG [`chart`];
//! - [`sequential`]: one order at a time, the saga without queueing.
//!
//! `main.rs` only parses the command line ([`cli`]) and calls [`command`].
#![forbid(unsafe_code)]

pub mod baseline;
pub mod capacity;
pub mod chart;
pub mod checkout;
pub mod cli;
pub mod client;
pub mod command;
pub mod cost;
pub mod procstat;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod sequential;
pub mod stats;
pub mod stock;
