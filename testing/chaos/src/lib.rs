//! Shipshape's central claim, tested: while checkouts flow, processes crash
//! and restart, the broker goes down and comes back on the same data,
//! database sessions are cut, links slow down, drop or blackhole, and the
//! payment provider errs, stalls or charges without answering; afterwards
//! every order is CONFIRMED or CANCELLED and no stock or money is lost or
//! duplicated.
//!
//! - [`schedule`]: the faults, read from a TOML file users can write;
//! - [`runner`]: a stack of its own, the load-test tool's checkout load,
//!   the faults on time, a supervisor, the wait until the system is quiet,
//!   and the invariant checker (`shipshape-invariants`);
//! - [`report`]: orders, outcomes, faults with timestamps, convergence time,
//!   violations and the load test's latencies.
//!
//! `main.rs` only reads the command line; `cargo xtask chaos` builds the
//! release binaries and runs it.
#![forbid(unsafe_code)]

pub mod report;
pub mod runner;
pub mod schedule;

pub use report::ChaosReport;
pub use runner::{RunnerOptions, run};
pub use schedule::Schedule;
