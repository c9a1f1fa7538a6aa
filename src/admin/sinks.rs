//! The sinks as the admin server sees them: each lane's counters (read at scrape time) and each
//! sink's last health check, for `/metrics` and `/readyz`.

use crate::metrics::lock;
use crate::pipeline::LaneStats;
use std::sync::{Arc, Mutex};

/// One sink: its lane's counters and its last health check.
#[derive(Debug)]
pub(crate) struct SinkState {
    pub(crate) name: String,
    pub(crate) lane: Arc<LaneStats>,
    /// `None` until the first check answered.
    pub(crate) health: Option<Result<(), String>>,
}

/// The dead-letter sink: its name and its last health check (`None` until the first answered).
pub(crate) type DeadLetterState = (String, Option<Result<(), String>>);

/// Every sink of the command, shared by the health checks, the collector and readiness.
#[derive(Debug, Default)]
pub struct SinkBoard {
    pub(crate) sinks: Mutex<Vec<SinkState>>,
    pub(crate) dead_letter: Mutex<Option<DeadLetterState>>,
}

impl SinkBoard {
    /// Registers the lanes (name, counters), none checked yet.
    pub fn sinks(&self, lanes: &[(String, Arc<LaneStats>)]) {
        *lock(&self.sinks) = lanes
            .iter()
            .map(|(name, lane)| SinkState {
                name: name.clone(),
                lane: Arc::clone(lane),
                health: None,
            })
            .collect();
    }

    /// Records a sink's health check; returns the new state when it changed.
    pub fn sink_health(&self, index: usize, result: Result<(), String>) -> Option<bool> {
        let mut sinks = lock(&self.sinks);
        let sink = sinks.get_mut(index)?;
        let was = sink.health.as_ref().map(Result::is_ok);
        let now = result.is_ok();
        sink.health = Some(result);
        (was != Some(now)).then_some(now)
    }

    /// Registers the dead-letter sink, by name.
    pub fn dead_letter(&self, name: &str) {
        *lock(&self.dead_letter) = Some((name.to_owned(), None));
    }

    /// Records the dead-letter sink's health check; returns the new state when it changed.
    pub fn dead_letter_health(&self, result: Result<(), String>) -> Option<bool> {
        let mut dead_letter = lock(&self.dead_letter);
        let (_, health) = dead_letter.as_mut()?;
        let was = health.as_ref().map(Result::is_ok);
        let now = result.is_ok();
        *health = Some(result);
        (was != Some(now)).then_some(now)
    }
}
