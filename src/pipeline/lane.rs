//! One lane: the queue and in-flight window of one sink. One run's events (same
//! `partitionkey`) leave in the order they came: a failed event is retried before any later event
//! of its run, and on sinks whose concurrent messages may overtake each other
//! ([`KeyOrder::OneInFlight`], e.g. HTTP) at most one event per run is in flight. Runs become
//! runnable earliest event first; while the sink fails the lane probes with one event; an
//! event that fails for good goes to the dead-letter sink.

use super::retry::{Jitter, RetryPolicy};
use super::stats::{LaneStats, lock};
use crate::encode::{DEAD_LETTER_REASON, DEAD_LETTER_SINK};
use cloudevents::{AttributesReader as _, Event};
use futures_util::stream::{FuturesUnordered, StreamExt};
use sink_core::{KeyOrder, Receipt, Sink, SinkError};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

/// Sizes of each lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneConfig {
    /// Events queued or in flight per sink before intake pauses.
    pub capacity: usize,
    /// Events published but not yet acknowledged per sink.
    pub window: usize,
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            window: 256,
        }
    }
}

/// One event waiting in, or travelling through, a lane.
pub(super) struct Item {
    pub(super) event: Arc<Event>,
    pub(super) key: Arc<str>,
    pub(super) seq: u64,
    pub(super) attempts: u32,
    pub(super) done: Option<Arc<Completion>>,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Item {
    /// The event reached its sink or the dead-letter sink.
    pub(super) fn complete(&self) {
        if let Some(done) = &self.done {
            done.lane_done();
        }
    }
}

/// Counts down the lanes one tracked event was routed to; the last one reports its token.
pub(super) struct Completion {
    pub(super) remaining: AtomicUsize,
    pub(super) token: u64,
    pub(super) tx: mpsc::UnboundedSender<u64>,
}

impl Completion {
    pub(super) fn lane_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver is gone only when the caller stopped caring (shutdown).
            let _ = self.tx.send(self.token);
        }
    }
}

#[derive(Default)]
struct KeyState {
    queue: VecDeque<Item>,
    in_flight: usize,
    /// The sequence number under which the key is in the runnable heap, if it is.
    listed: Option<u64>,
}

/// Lists `key` as runnable under its first queued event, unless it already is.
fn list(runnable: &mut BinaryHeap<Reverse<(u64, Arc<str>)>>, state: &mut KeyState, key: &Arc<str>) {
    if let Some(front) = state.queue.front()
        && state.listed != Some(front.seq)
    {
        state.listed = Some(front.seq);
        runnable.push(Reverse((front.seq, Arc::clone(key))));
    }
}

type Flight = Pin<Box<dyn Future<Output = Landed> + Send>>;

enum Landed {
    Sink(Item, Result<(), SinkError>, Instant),
    DeadLetter,
}

pub(super) struct Lane {
    sink: Arc<dyn Sink>,
    dead_letter: Option<Arc<dyn Sink>>,
    order: KeyOrder,
    window: usize,
    retry: RetryPolicy,
    stats: Arc<LaneStats>,
    keys: HashMap<Arc<str>, KeyState>,
    /// Keys whose first queued event may be published now, earliest event first, so a sink that
    /// keeps up publishes in arrival order (deterministic output); entries whose sequence number
    /// no longer matches the key's listing are stale and skipped.
    runnable: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    /// Consecutive failed attempts; while non-zero the lane probes with one event at a time.
    failures: u32,
    /// When the current run of failures began: the window's events in flight then fail with
    /// it, and only attempts published after it (the probes) lengthen the backoff.
    failing_since: Option<Instant>,
    /// The reason (see [`reason`]) of the last failure logged in this run of failures: a new
    /// reason is logged at once, a repeated one only at failure counts 1, 2, 4, 8, …
    logged_reason: Option<String>,
    /// Events published to the sink and not yet acknowledged or failed.
    flying: usize,
    resume_at: Option<Instant>,
    jitter: Jitter,
}

impl Lane {
    /// A lane to `sink`, publishing at most `window` events at once.
    pub(super) fn new(
        sink: Arc<dyn Sink>,
        dead_letter: Option<Arc<dyn Sink>>,
        window: usize,
        retry: RetryPolicy,
        stats: Arc<LaneStats>,
    ) -> Self {
        Self {
            order: sink.key_order(),
            sink,
            dead_letter,
            window: window.max(1),
            retry,
            stats,
            keys: HashMap::new(),
            runnable: BinaryHeap::new(),
            failures: 0,
            failing_since: None,
            logged_reason: None,
            flying: 0,
            resume_at: None,
            jitter: Jitter::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut flights: FuturesUnordered<Flight> = FuturesUnordered::new();
        let mut open = true;
        loop {
            self.dispatch(&mut flights).await;
            if !open && flights.is_empty() && self.keys.is_empty() {
                break;
            }
            let resume_at = self.resume_at;
            tokio::select! {
                biased;
                Some(landed) = flights.next(), if !flights.is_empty() => self.land(landed, &mut flights),
                item = rx.recv(), if open => match item {
                    Some(item) => self.enqueue(item, false),
                    None => open = false,
                },
                () = sleep_until(resume_at), if resume_at.is_some() => self.resume_at = None,
            }
            // Take in everything already queued, so that every run with an event waiting is a
            // candidate for the window (one item per wake-up would starve it while acks stream in).
            while open {
                match rx.try_recv() {
                    Ok(item) => self.enqueue(item, false),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
        }
    }

    fn limit(&self) -> usize {
        if self.failures > 0 { 1 } else { self.window }
    }

    async fn dispatch(&mut self, flights: &mut FuturesUnordered<Flight>) {
        while self.resume_at.is_none() && self.flying < self.limit() {
            let Some(Reverse((seq, key))) = self.runnable.pop() else {
                return;
            };
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            if state.listed != Some(seq) {
                continue;
            }
            state.listed = None;
            let Some(mut item) = state.queue.pop_front() else {
                continue;
            };
            state.in_flight += 1;
            self.flying += 1;
            if self.order == KeyOrder::Pipelined {
                list(&mut self.runnable, state, &key);
            }
            item.attempts += 1;
            let started = Instant::now();
            let accepted: Result<Receipt, SinkError> = self.sink.publish(&item.event).await;
            match accepted {
                Ok(receipt) => flights.push(Box::pin(async move {
                    Landed::Sink(item, receipt.await, started)
                })),
                Err(err) => {
                    // Handled now, not when the flights next land: back off (or dead-letter)
                    // before publishing anything else, whatever else lands meanwhile.
                    self.land(Landed::Sink(item, Err(err), started), flights);
                    return;
                }
            }
        }
    }

    /// Queues an item behind its run's earlier events (`retry`: back in front of later ones).
    fn enqueue(&mut self, item: Item, retry: bool) {
        let state = self.keys.entry(Arc::clone(&item.key)).or_default();
        if retry {
            let at = state
                .queue
                .iter()
                .position(|queued| queued.seq > item.seq)
                .unwrap_or(state.queue.len());
            state.queue.insert(at, item);
        } else {
            state.queue.push_back(item);
        }
        let free = match self.order {
            KeyOrder::Pipelined => true,
            KeyOrder::OneInFlight => state.in_flight == 0,
        };
        if free {
            let key = Arc::clone(&state.queue[0].key);
            list(&mut self.runnable, state, &key);
        }
    }

    fn land(&mut self, landed: Landed, flights: &mut FuturesUnordered<Flight>) {
        let (item, result, started) = match landed {
            Landed::Sink(item, result, started) => (item, result, started),
            Landed::DeadLetter => return,
        };
        self.flying -= 1;
        self.release(&item.key);
        match result {
            Ok(()) => {
                // Only an attempt published after the failures began (a probe) ends them: one
                // that was in flight before may succeed while the others of its window failed.
                if self.failing_since.is_none_or(|since| started > since) {
                    if self.failures > 0 {
                        tracing::info!(
                            sink = self.sink.name(),
                            failures = self.failures,
                            "sink reachable again; resuming full window"
                        );
                    }
                    self.failures = 0;
                    self.failing_since = None;
                    self.logged_reason = None;
                    self.stats.failures.store(0, Ordering::Relaxed);
                }
                lock(&self.stats.latency).record(started.elapsed());
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.stats.left(item.seq);
                self.forget_if_idle(&item.key);
                item.complete();
            }
            Err(err)
                if err.is_transient()
                    && (self.retry.max_attempts == 0
                        || item.attempts < self.retry.max_attempts) =>
            {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                *lock(&self.stats.last_error) = err.to_string();
                // One outage fails a whole window at once: that is one failure, not hundreds
                // (which would put the backoff at its cap after a blip). Only a probe — published
                // after the failures began — lengthens it.
                let probe = self.failing_since.is_none_or(|since| started > since);
                if !probe {
                    self.enqueue(item, true);
                    return;
                }
                self.failing_since = Some(Instant::now());
                self.failures = self.failures.saturating_add(1);
                self.stats
                    .failures
                    .store(u64::from(self.failures), Ordering::Relaxed);
                let backoff = self.retry.delay(self.failures);
                // Equal jitter: half fixed, half random, so lanes that failed together spread out.
                let mut delay = backoff / 2 + backoff.mul_f64(self.jitter.next() / 2.0);
                if let Some(asked) = err.retry_after() {
                    delay = delay.max(asked.min(self.retry.retry_after_max));
                }
                let until = Instant::now() + delay;
                self.resume_at = Some(self.resume_at.map_or(until, |at| at.max(until)));
                let why = reason(&err);
                if self.failures.is_power_of_two() || self.logged_reason.as_ref() != Some(&why) {
                    self.logged_reason = Some(why);
                    tracing::warn!(
                        sink = self.sink.name(),
                        error = %err,
                        failures = self.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "publish failed; retrying"
                    );
                }
                self.enqueue(item, true);
            }
            Err(err) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.forget_if_idle(&item.key);
                let reason = if err.is_transient() {
                    format!("gave up after {} attempts: {err}", item.attempts)
                } else {
                    err.to_string()
                };
                flights.push(Box::pin(dead_letter(
                    item,
                    reason,
                    self.sink.name().to_owned(),
                    self.dead_letter.clone(),
                    self.retry.clone(),
                    Arc::clone(&self.stats),
                )));
            }
        }
    }

    /// One event of `key` left flight: its run may publish the next one.
    fn release(&mut self, key: &Arc<str>) {
        if let Some(state) = self.keys.get_mut(key) {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                list(&mut self.runnable, state, key);
            }
        }
    }

    fn forget_if_idle(&mut self, key: &Arc<str>) {
        if self
            .keys
            .get(key)
            .is_some_and(|s| s.in_flight == 0 && s.queue.is_empty())
        {
            self.keys.remove(key);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a failure is about, without its details: a sink's message up to its first `:`, digits
/// left out ("cannot connect to the broker", "unroutable", "a new producer waits for  records
/// of the one it replaced"), so that a retry whose reason changed is logged at once while one
/// failing the same way again is logged ever more rarely.
fn reason(err: &SinkError) -> String {
    let message = err.message();
    let head = message.split(':').next().unwrap_or(message);
    head.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Sends a failed event to the dead-letter sink (retrying its transient failures), or logs it.
async fn dead_letter(
    item: Item,
    reason: String,
    sink_name: String,
    target: Option<Arc<dyn Sink>>,
    retry: RetryPolicy,
    stats: Arc<LaneStats>,
) -> Landed {
    let seq = item.seq;
    let done = |stats: &LaneStats| stats.left(seq);
    let Some(target) = target else {
        tracing::error!(
            sink = %sink_name,
            id = item.event.id(),
            r#type = item.event.ty(),
            subject = item.event.subject().unwrap_or(""),
            %reason,
            "event not delivered and no --dead-letter sink configured"
        );
        stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        done(&stats);
        return Landed::DeadLetter;
    };
    let mut event = (*item.event).clone();
    event.set_extension(DEAD_LETTER_REASON, reason.as_str());
    event.set_extension(DEAD_LETTER_SINK, sink_name.as_str());
    let mut failures = 0;
    loop {
        let result = match target.publish(&event).await {
            Ok(receipt) => receipt.await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                item.complete();
                tracing::warn!(sink = %sink_name, id = event.id(), %reason, "event dead-lettered");
                break;
            }
            Err(err) if err.is_transient() => {
                failures += 1;
                tokio::time::sleep(retry.delay(failures)).await;
            }
            Err(err) => {
                tracing::error!(
                    sink = %sink_name,
                    id = event.id(),
                    %reason,
                    error = %err,
                    "the dead-letter sink refused the event; it is lost"
                );
                stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    done(&stats);
    Landed::DeadLetter
}

#[cfg(test)]
mod tests {
    use super::reason;
    use sink_core::SinkError;

    #[test]
    fn a_reason_is_the_message_head_without_its_numbers() {
        let r = |m: &str| reason(&SinkError::transient("s", m));
        assert_eq!(
            r("cannot connect to the broker: IO error: Connection refused (os error 111)"),
            "cannot connect to the broker"
        );
        assert_eq!(
            r("unroutable: no queue bound for routing key \"a\""),
            r("unroutable: no queue bound for routing key \"b\", just after reconnecting")
        );
        assert_eq!(
            r("a new producer waits for 12 records of the one it replaced"),
            r("a new producer waits for 3 records of the one it replaced")
        );
        assert_ne!(r("cannot connect to the broker: x"), r("unroutable: x"));
    }
}
