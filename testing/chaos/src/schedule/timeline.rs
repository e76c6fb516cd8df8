//! The timeline: every start and end of the schedule's faults, in the
//! order they happen.

use std::time::Duration;

use super::Schedule;

impl Schedule {
    /// Every start and end of a fault, in the order they happen. At the
    /// same instant, ends come before starts, so a fault may start on a
    /// target just as another one there ends.
    pub fn timeline(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .faults
            .iter()
            .enumerate()
            .flat_map(|(fault, f)| {
                let begin = Step {
                    at: f.at,
                    fault,
                    edge: Edge::Begin,
                };
                let end = f.end().map(|at| Step {
                    at,
                    fault,
                    edge: Edge::End,
                });
                std::iter::once(begin).chain(end)
            })
            .collect();
        steps.sort_by_key(|step| (step.at, step.edge, step.fault));
        steps
    }
}

/// Whether a step applies a fault or undoes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Edge {
    End,
    Begin,
}

/// One moment of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// After the load started.
    pub at: Duration,
    /// Index into [`Schedule::faults`].
    pub fault: usize,
    pub edge: Edge,
}
