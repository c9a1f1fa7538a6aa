//! The pipeline: an observation → facts → events ([`Stage`]), then the lanes to the sinks. Live
//! and `replay` run the same stage; their difference is one policy, [`Finish`]: live, a run's
//! state shrinks to a tombstone once every sink finished with its facts (the checkpoint's
//! progress); in a replay, once they are derived.

pub mod delivery;
pub mod lane;
pub mod presence;
pub mod progress;
pub mod retry;
pub mod router;
pub mod stats;

pub use delivery::{Delivery, Unfinished};
pub use lane::LaneConfig;
pub use retry::RetryPolicy;
pub use router::{Filter, Route};
pub use stats::{Histogram, LATENCY_BUCKETS, LaneStats};

use crate::checkpoint::Checkpoint;
use crate::derive::{Deriver, PodStart};
use crate::encode::{self, EncodeConfig};
use crate::metrics::Metrics;
use crate::model::{Fact, Origin, Outcome};
use crate::source::lines::{ReplayCounts, read_line, report_bad_line};
use crate::source::recording::{self, Observed};
use chrono::Utc;
use cloudevents::Event;
use progress::Progress;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

/// When a run that ended stops being tracked in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// When its facts are acknowledged (live: [`progress::Progress`] says so).
    OnAck,
    /// When its status shows it closed (a replay: nothing is acknowledged later). Not on an
    /// Event's word: the status, with the task facts, may follow.
    AtDerive,
}

/// One observation's worth: the facts, and what the caller reports — notices to log, pods seen
/// leaving Pending (timed live only).
#[derive(Debug, Default)]
pub struct Staged {
    pub facts: Vec<Fact>,
    pub notices: Vec<crate::derive::Notice>,
    pub pod_starts: Vec<PodStart>,
}

/// Observation → facts → events.
pub struct Stage {
    deriver: Deriver,
    encode: EncodeConfig,
    finish: Finish,
}

impl Stage {
    pub fn new(deriver: Deriver, encode: EncodeConfig, finish: Finish) -> Self {
        Self {
            deriver,
            encode,
            finish,
        }
    }

    /// Derives what `observed` brings.
    pub fn observe(&mut self, observed: &Observed) -> Staged {
        let facts = self.deriver.observe(observed);
        if self.finish == Finish::AtDerive {
            // A run its status shows closed derives nothing more: its state shrinks to the
            // uid, as it does live once its facts are delivered (a recording of thousands of
            // runs otherwise keeps them all).
            for fact in facts
                .iter()
                .filter(|f| f.closes_run() && f.origin == Origin::Status)
            {
                self.deriver.finish(&fact.run.uid, fact.run.attempt.retries);
            }
        }
        self.staged(facts)
    }

    /// Facts derived outside an observation (a workflow found gone), with what came with them.
    pub fn staged(&mut self, facts: Vec<Fact>) -> Staged {
        Staged {
            facts,
            notices: self.deriver.take_notices(),
            pod_starts: self.deriver.take_pod_starts(),
        }
    }

    /// The CloudEvent of `fact`; `None` (said at error level) if it cannot be encoded —
    /// configuration is validated up front, so that is a bug, and the rest goes on.
    pub fn encode(&self, fact: &Fact) -> Option<Event> {
        match encode::encode(fact, &self.encode) {
            Ok(event) => Some(event),
            Err(err) => {
                tracing::error!(error = %err, run = %fact.run.uid, "fact could not be encoded");
                None
            }
        }
    }

    pub fn deriver(&self) -> &Deriver {
        &self.deriver
    }

    pub fn deriver_mut(&mut self) -> &mut Deriver {
        &mut self.deriver
    }

    pub fn into_deriver(self) -> Deriver {
        self.deriver
    }
}

/// The publishing half: events into the lanes and, tracked, what the sinks finished with into
/// the checkpoint.
pub struct Pipeline {
    delivery: Delivery,
    tracking: Option<Tracking>,
    /// Events handed to the lanes.
    sent: u64,
}

/// Live: facts are tracked from the lanes to the checkpoint ([`progress`]).
struct Tracking {
    checkpoint: Checkpoint,
    progress: Progress,
    done_tx: tokio::sync::mpsc::UnboundedSender<u64>,
    done_rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    /// Facts sent but not durably recorded as done (in flight, done and not written, or in the
    /// write under way) are kept at most this many: what a `kill -9` can make the next start
    /// send again. The catch-up bound until [`Pipeline::caught_up`], then `steady_max`.
    undurable_max: usize,
    steady_max: usize,
    /// Catching up (the bound is the catch-up's): a restart's backlog costs checkpoint writes by
    /// the interval and the catch-up bound, not one per `steady_max / 2` facts.
    catching_up: bool,
    /// After a failed write, no other begins before this.
    retry_at: Option<tokio::time::Instant>,
    /// Publishing's waits at the bound while a checkpoint write was under way.
    waits: Waits,
    metrics: Option<Arc<Metrics>>,
}

/// How often and how long publishing waited at the duplicate bound for a checkpoint write.
#[derive(Debug, Default, Clone, Copy)]
pub struct Waits {
    pub count: u64,
    pub time: Duration,
}

impl Waits {
    fn record(&mut self, waited: Duration) {
        self.count += 1;
        self.time += waited;
    }
}

/// What [`Pipeline::next_completion`] woke for.
pub enum Completion {
    /// Every sink finished with a fact (its completion token).
    Done(u64),
    /// The checkpoint write under way ended.
    Written(Result<(), crate::checkpoint::CheckpointError>),
}

/// A failed checkpoint write is tried again after this, not at once.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Pipeline {
    /// Events go to the lanes and are forgotten (`replay`, `resend`).
    pub fn untracked(delivery: Delivery) -> Self {
        Self {
            delivery,
            tracking: None,
            sent: 0,
        }
    }

    /// Each fact is tracked until every sink finished with it, then recorded in `checkpoint`;
    /// at most `undurable_max` are sent and not durably recorded (`run`), `catch_up_max` while
    /// catching up (until [`Pipeline::caught_up`]).
    pub fn tracked(
        delivery: Delivery,
        checkpoint: Checkpoint,
        undurable_max: usize,
        catch_up_max: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        let undurable_max = undurable_max.max(1);
        Self {
            delivery,
            tracking: Some(Tracking {
                checkpoint,
                progress: Progress::default(),
                done_tx,
                done_rx,
                undurable_max: catch_up_max.max(undurable_max),
                steady_max: undurable_max,
                catching_up: true,
                retry_at: None,
                waits: Waits::default(),
                metrics,
            }),
            sent: 0,
        }
    }

    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Events handed to the lanes so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The checkpoint, tracked.
    pub fn checkpoint_mut(&mut self) -> Option<&mut Checkpoint> {
        self.tracking.as_mut().map(|t| &mut t.checkpoint)
    }

    /// Sends an event untracked; waits while its lanes are full.
    pub async fn send(&mut self, event: cloudevents::Event) {
        self.sent += 1;
        self.delivery.send(event).await;
    }

    /// The next fact every sink finished with, or the end of the checkpoint write under way
    /// (tracked; never resolves untracked). Cancel-safe; hand it to [`Pipeline::complete`].
    pub async fn next_completion(&mut self) -> Completion {
        match &mut self.tracking {
            Some(t) => t.next_completion().await,
            None => std::future::pending().await,
        }
    }

    /// Takes in a completion: a done fact is recorded, its run closed if that was its last (see
    /// [`Progress`]); a checkpoint write's outcome is taken in.
    pub fn complete(&mut self, completion: Completion, stage: &mut Stage) {
        if let Some(t) = &mut self.tracking {
            t.complete(completion, stage.deriver_mut());
        }
    }

    /// The checkpoint interval: begins writing what changed, in the background (not while a
    /// write is under way, nor right after one failed).
    pub fn flush_due(&mut self) {
        if let Some(t) = &mut self.tracking {
            t.start_write();
        }
    }

    /// The catch-up is over (every watch listed once). What it left undurable is written now;
    /// the steady bound holds once no more than it is undurable (until then the catch-up's
    /// facts finish under the catch-up's bound, written on the interval, not per half window).
    pub fn caught_up(&mut self) {
        if let Some(t) = &mut self.tracking
            && t.catching_up
        {
            t.catching_up = false;
            t.start_write();
            t.settle_bound();
        }
    }

    /// Encodes and sends facts, tracked, keeping the undurable ones within bounds: when the
    /// bound is reached the checkpoint is written, or the oldest in flight awaited. Untracked,
    /// encodes and sends.
    pub async fn publish(&mut self, stage: &mut Stage, facts: Vec<Fact>) {
        for fact in facts {
            let Some(event) = stage.encode(&fact) else {
                continue;
            };
            let Some(t) = &mut self.tracking else {
                self.send(event).await;
                continue;
            };
            // Only at the bound does publishing wait: for facts to be done or for the write
            // under way to end (a write begins once half the bound is done and unwritten, so
            // it normally ends while the other half fills).
            let mut waited: Option<std::time::Instant> = None;
            while t.progress.in_flight() + t.checkpoint.undurable() >= t.undurable_max {
                if t.checkpoint.is_writing() && waited.is_none() {
                    // The bound is reached with a checkpoint write under way: the wait counts
                    // as the checkpoint's (a wait for the sinks alone does not).
                    waited = Some(std::time::Instant::now());
                }
                if !t.checkpoint.is_writing() && t.progress.in_flight() == 0 {
                    // Everything is done and unwritten: write it now (after a failed write's
                    // pause).
                    if let Some(at) = t.retry_at.take() {
                        tokio::time::sleep_until(at).await;
                    }
                    t.start_write();
                }
                let completion = t.next_completion().await;
                t.complete(completion, stage.deriver_mut());
            }
            if let Some(since) = waited {
                t.waits.record(since.elapsed());
                if let Some(m) = &t.metrics {
                    m.checkpoint_waits(t.waits.count, t.waits.time);
                }
            }
            // An offloaded run keeps its marks instead of shrinking to a tombstone.
            let run_end = fact.closes_run().then(|| {
                let at = fact
                    .time
                    .map_or_else(|| Utc::now().timestamp(), |t| t.timestamp());
                (at, Outcome::of_phase(&fact.run.phase))
            });
            let token = t
                .progress
                .add(&fact.run.uid, fact.mark(), fact.run.attempt, run_end);
            self.sent += 1;
            self.delivery.send_tracked(event, token, &t.done_tx).await;
        }
    }

    /// Facts in flight, tracked.
    pub fn in_flight(&self) -> usize {
        self.tracking.as_ref().map_or(0, |t| t.progress.in_flight())
    }

    /// Shutdown, untracked: the lanes finish what they hold (until `give_up`).
    pub async fn finish_untracked(
        self,
        give_up: impl std::future::Future<Output = ()>,
    ) -> Finished {
        Finished::of(self.delivery, give_up).await
    }

    /// Shutdown: the lanes finish what they hold (until `give_up`), the done facts are recorded
    /// and, tracked, the checkpoint written. Returns what was left, and the unrouted count.
    pub async fn finish(
        self,
        stage: &mut Stage,
        give_up: impl std::future::Future<Output = ()>,
    ) -> Finished {
        let Self {
            delivery, tracking, ..
        } = self;
        let finished = Finished::of(delivery, give_up).await;
        if let Some(mut t) = tracking {
            while let Ok(token) = t.done_rx.try_recv() {
                t.progress.done(
                    token,
                    &mut t.checkpoint,
                    stage.deriver_mut(),
                    Utc::now().timestamp(),
                );
            }
            match t.checkpoint.settle().await {
                Ok(()) => tracing::info!(
                    entries = t.checkpoint.len(),
                    writes = t.checkpoint.stats().writes,
                    failures = t.checkpoint.stats().failures,
                    bytes = t.checkpoint.stats().bytes,
                    waits = t.waits.count,
                    waited_ms = t.waits.time.as_millis() as u64,
                    "checkpoint written"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "final checkpoint write failed; undone facts will be published again"
                ),
            }
        }
        finished
    }
}

/// What a finished pipeline left: per lane its counters, what was still pending, and the events
/// no route took.
pub struct Finished {
    pub lanes: Vec<(String, Arc<LaneStats>)>,
    pub unfinished: Unfinished,
    pub unrouted: u64,
}

impl Finished {
    /// Stops intake and lets the lanes finish (until `give_up`); `unrouted` is read first.
    async fn of(delivery: Delivery, give_up: impl std::future::Future<Output = ()>) -> Self {
        let lanes = delivery.stats();
        let unrouted = delivery.unrouted();
        let unfinished = delivery.finish(give_up).await;
        Self {
            lanes,
            unfinished,
            unrouted,
        }
    }
}

impl Tracking {
    async fn next_completion(&mut self) -> Completion {
        tokio::select! {
            Some(token) = self.done_rx.recv() => Completion::Done(token),
            result = self.checkpoint.written() => Completion::Written(result),
        }
    }

    fn complete(&mut self, completion: Completion, deriver: &mut Deriver) {
        match completion {
            Completion::Done(token) => {
                // Recorded, and its run closed if it was the last (see [`Progress`]); a write
                // begins once half the bound is done and unwritten.
                self.progress
                    .done(token, &mut self.checkpoint, deriver, Utc::now().timestamp());
                if self.checkpoint.unflushed() >= self.undurable_max.div_ceil(2) {
                    self.start_write();
                }
            }
            Completion::Written(result) => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "checkpoint write failed; trying again");
                    self.retry_at = Some(tokio::time::Instant::now() + WRITE_RETRY_PAUSE);
                }
                if let Some(m) = &self.metrics {
                    let stats = self.checkpoint.stats();
                    m.checkpoint(stats.writes, stats.failures);
                }
            }
        }
        self.settle_bound();
    }

    /// After the catch-up, the steady bound takes over once it holds.
    fn settle_bound(&mut self) {
        if !self.catching_up
            && self.undurable_max > self.steady_max
            && self.progress.in_flight() + self.checkpoint.undurable() <= self.steady_max
        {
            self.undurable_max = self.steady_max;
        }
    }

    /// Begins writing what changed, unless a write failed a moment ago.
    fn start_write(&mut self) {
        if self
            .retry_at
            .is_none_or(|at| tokio::time::Instant::now() >= at)
        {
            self.retry_at = None;
            self.checkpoint.start_flush();
        }
    }
}

/// Feeds every line of a recording through `stage`, handing each batch of events (one watch
/// line's worth) to `emit` until it says stop. Bad lines are reported with their number and
/// skipped.
pub fn replay(
    mut input: impl BufRead,
    stage: &mut Stage,
    metrics: Option<&Metrics>,
    mut emit: impl FnMut(Vec<Event>) -> bool,
) -> std::io::Result<ReplayCounts> {
    let mut counts = ReplayCounts::default();
    let mut line = Vec::with_capacity(64 * 1024);
    while read_line(&mut input, &mut line)? {
        counts.lines += 1;
        let observed = match recording::decode(&line) {
            Ok(Some(observed)) => observed,
            Ok(None) => continue,
            Err(err) => {
                counts.bad_lines += 1;
                report_bad_line(counts.lines, counts.bad_lines, &err);
                continue;
            }
        };
        // A recording has no observation times: pending times are measured live only.
        let Staged { facts, notices, .. } = stage.observe(&observed);
        for notice in &notices {
            crate::derive::log_notice(notice, Some(counts.lines));
        }
        if let Some(metrics) = metrics {
            metrics.facts(&facts);
            metrics.derive_stats(stage.deriver().stats(), counts.bad_lines);
        }
        if facts.is_empty() {
            continue;
        }
        let events: Vec<Event> = facts.iter().filter_map(|f| stage.encode(f)).collect();
        counts.events += events.len() as u64;
        if !emit(events) {
            break;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_after(recording: &str) -> usize {
        let path = format!(
            "{}/examples/recordings/{recording}",
            env!("CARGO_MANIFEST_DIR")
        );
        let input = std::fs::read(path).expect("bundled recording");
        let deriver = Deriver::new(crate::derive::DeriveConfig::default());
        let mut stage = Stage::new(deriver, EncodeConfig::default(), Finish::AtDerive);
        replay(input.as_slice(), &mut stage, None, |_| true).expect("replays");
        stage.deriver().open_runs()
    }

    #[test]
    fn closed_runs_shrink_to_tombstones_and_offloaded_ones_stay_open() {
        assert_eq!(open_after("kfp-v2-success.jsonl"), 0);
        assert_eq!(open_after("kfp-v2-compressed-nodes.jsonl"), 0);
        // Both stay open: the offloaded one (its task Events may follow its end) and the one
        // whose end only an Event told (its status may still follow).
        assert_eq!(open_after("offloaded-and-deleted-workflows.jsonl"), 2);
    }
}
