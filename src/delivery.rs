//! The delivery engine: one lane per sink, each with a bounded queue and in-flight window, retries
//! with capped exponential backoff and jitter, and a dead-letter sink for what cannot be delivered.
//!
//! Intake ([`Delivery::send`]) routes each event to the lanes whose filter matches and waits for
//! room in each (back-pressure: intake pauses instead of memory growing). A lane never waits for
//! another lane. Within a lane, one run's events (same `partitionkey`) leave in the order they came:
//! a failed event is retried before any later event of its run, and on sinks whose concurrent
//! messages may overtake each other ([`KeyOrder::OneInFlight`], e.g. HTTP) at most one event per run
//! is in flight.

use crate::route::{Filter, Route};
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader as _, Event};
use futures_util::stream::{FuturesUnordered, StreamExt};
use sink_core::{KeyOrder, Receipt, Sink, SinkError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

/// Extension naming why an event was dead-lettered (the sink's error message).
pub const DEAD_LETTER_REASON: &str = "deadletterreason";
/// Extension naming the sink that refused a dead-lettered event.
pub const DEAD_LETTER_SINK: &str = "deadlettersink";

/// How failed publishes are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth factor per consecutive failure.
    pub multiplier: f64,
    /// Attempts per event before it is dead-lettered; 0 = retry until delivered.
    pub max_attempts: u32,
    /// Upper bound of a delay the far side asks for (`Retry-After`).
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: 0,
            retry_after_max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failures` consecutive failures, before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }
}

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

/// Counters of one lane, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Events routed to this lane.
    pub routed: AtomicU64,
    /// Events the sink acknowledged.
    pub delivered: AtomicU64,
    /// Attempts that failed transiently and were retried.
    pub retried: AtomicU64,
    /// Events the sink refused for good (or that ran out of attempts).
    pub failed: AtomicU64,
    /// Failed events the dead-letter sink acknowledged.
    pub dead_lettered: AtomicU64,
    /// Failed events with no dead-letter sink, or that the dead-letter sink refused: logged, lost.
    pub undeliverable: AtomicU64,
    /// Events queued or in flight now.
    pub depth: AtomicU64,
    /// Consecutive failed attempts now (0 while the sink takes events).
    pub failures: AtomicU64,
    /// The last failure's message, kept while `failures` is above zero.
    last_error: Mutex<String>,
    /// When each event still queued or in flight was routed here, by sequence number.
    pending: Mutex<BTreeMap<u64, Instant>>,
    latency: Mutex<Latency>,
}

/// Upper bounds (seconds) of the publish-to-acknowledgement histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A cumulative histogram as Prometheus exposes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub sum: f64,
    pub count: u64,
    /// Upper bound and the count in that bucket alone (not cumulative, as prometheus-client's
    /// encoder takes them); the last bound, `f64::MAX`, is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LaneStats {
    /// Publish-to-acknowledgement latency quantile (0.0–1.0) of delivered events, if any.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        lock(&self.latency).quantile(q)
    }

    /// Publish-to-acknowledgement latency of delivered events, in [`LATENCY_BUCKETS`].
    pub fn latency_histogram(&self) -> Histogram {
        let latency = lock(&self.latency);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(latency.bounded)
            .collect();
        let within: u64 = latency.bounded.iter().sum();
        buckets.push((f64::MAX, latency.count - within));
        Histogram {
            sum: latency.sum_micros as f64 / 1e6,
            count: latency.count,
            buckets,
        }
    }

    /// How long the oldest event still queued or in flight has been in this lane.
    pub fn oldest_pending(&self) -> Option<Duration> {
        lock(&self.pending)
            .values()
            .next()
            .map(|since| since.elapsed())
    }

    /// The last failure's message while the sink is failing.
    pub fn last_error(&self) -> Option<String> {
        (self.failures.load(Ordering::Relaxed) > 0).then(|| lock(&self.last_error).clone())
    }

    fn routed(&self, seq: u64) {
        self.routed.fetch_add(1, Ordering::Relaxed);
        self.depth.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(seq, Instant::now());
    }

    /// The event left the lane: delivered, dead-lettered or given up.
    fn left(&self, seq: u64) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        lock(&self.pending).remove(&seq);
    }
}

/// A log-linear latency histogram: 8 sub-buckets per power of two of microseconds (≤ 12.5 % error).
#[derive(Debug)]
struct Latency {
    buckets: Vec<u64>,
    count: u64,
    sum_micros: u64,
    /// Per [`LATENCY_BUCKETS`] bound, the events above the previous bound and up to this one.
    bounded: [u64; LATENCY_BUCKETS.len()],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: vec![0; 40 * 8],
            count: 0,
            sum_micros: 0,
            bounded: [0; LATENCY_BUCKETS.len()],
        }
    }
}

impl Latency {
    fn index(micros: u64) -> usize {
        if micros < 8 {
            return micros as usize;
        }
        let power = 63 - micros.leading_zeros() as usize; // ≥ 3
        let sub = ((micros >> (power - 3)) & 7) as usize;
        ((power - 2) * 8 + sub).min(40 * 8 - 1)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 8 {
            return index as u64;
        }
        let power = index / 8 + 2;
        let sub = (index % 8) as u64;
        (8 + sub) << (power - 3)
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(micros)] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        let seconds = micros as f64 / 1e6;
        if let Some(at) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.bounded[at] += 1;
        }
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(Self::lower_bound(index)));
            }
        }
        None
    }
}

/// One event waiting in, or travelling through, a lane.
struct Item {
    event: Arc<Event>,
    key: Arc<str>,
    seq: u64,
    attempts: u32,
    done: Option<Arc<Completion>>,
    _permit: OwnedSemaphorePermit,
}

impl Item {
    /// The event reached its sink or the dead-letter sink.
    fn complete(&self) {
        if let Some(done) = &self.done {
            done.lane_done();
        }
    }
}

/// Counts down the lanes one tracked event was routed to; the last one reports its token.
struct Completion {
    remaining: AtomicUsize,
    token: u64,
    tx: mpsc::UnboundedSender<u64>,
}

impl Completion {
    fn lane_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver is gone only when the caller stopped caring (shutdown).
            let _ = self.tx.send(self.token);
        }
    }
}

struct LaneHandle {
    name: String,
    filter: Filter,
    room: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Item>,
    stats: Arc<LaneStats>,
    task: tokio::task::JoinHandle<()>,
    sink: Arc<dyn Sink>,
}

/// What is left undelivered when [`Delivery::finish`] gave up waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Per sink name: events still queued or in flight.
    pub pending: Vec<(String, u64)>,
}

/// Fans events out to the sinks' lanes.
pub struct Delivery {
    lanes: Vec<LaneHandle>,
    dead_letter: Option<Arc<dyn Sink>>,
    seq: u64,
    unrouted: u64,
}

impl Delivery {
    /// Starts one lane per route on the current tokio runtime.
    pub fn start(
        routes: Vec<Route>,
        dead_letter: Option<Arc<dyn Sink>>,
        lanes: &LaneConfig,
        retry: &RetryPolicy,
    ) -> Self {
        let lanes = routes
            .into_iter()
            .map(|route| {
                let (tx, rx) = mpsc::unbounded_channel();
                let stats = Arc::new(LaneStats::default());
                let lane = Lane {
                    sink: Arc::clone(&route.sink),
                    dead_letter: dead_letter.clone(),
                    order: route.sink.key_order(),
                    window: lanes.window.max(1),
                    retry: retry.clone(),
                    stats: Arc::clone(&stats),
                    keys: HashMap::new(),
                    runnable: BinaryHeap::new(),
                    failures: 0,
                    flying: 0,
                    resume_at: None,
                    jitter: Jitter::new(),
                };
                LaneHandle {
                    name: route.name,
                    filter: route.filter,
                    room: Arc::new(Semaphore::new(lanes.capacity.max(1))),
                    tx,
                    stats,
                    task: tokio::spawn(lane.run(rx)),
                    sink: route.sink,
                }
            })
            .collect();
        Self {
            lanes,
            dead_letter,
            seq: 0,
            unrouted: 0,
        }
    }

    /// Each lane's name and counters.
    pub fn stats(&self) -> Vec<(String, Arc<LaneStats>)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.stats)))
            .collect()
    }

    /// Each lane's name and sink.
    pub fn sinks(&self) -> Vec<(String, Arc<dyn Sink>)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.sink)))
            .collect()
    }

    /// The dead-letter sink, if one is configured.
    pub fn dead_letter(&self) -> Option<Arc<dyn Sink>> {
        self.dead_letter.clone()
    }

    /// Events no sink's filter selected.
    pub fn unrouted(&self) -> u64 {
        self.unrouted
    }

    /// Hands `event` to every lane whose filter selects it, waiting while a lane is full.
    pub async fn send(&mut self, event: Event) {
        self.send_inner(event, None).await;
    }

    /// As [`send`](Self::send), and once every lane it was routed to has delivered or
    /// dead-lettered it, `token` comes out of `done` — at once when no filter selects it. Events
    /// a lane gives up on without a dead-letter sink, or still holds at shutdown, never do.
    pub async fn send_tracked(
        &mut self,
        event: Event,
        token: u64,
        done: &mpsc::UnboundedSender<u64>,
    ) {
        let lanes = self
            .lanes
            .iter()
            .filter(|l| l.filter.matches(&event))
            .count();
        if lanes == 0 {
            let _ = done.send(token);
        }
        let completion = Arc::new(Completion {
            remaining: AtomicUsize::new(lanes),
            token,
            tx: done.clone(),
        });
        self.send_inner(event, Some(completion)).await;
    }

    async fn send_inner(&mut self, event: Event, done: Option<Arc<Completion>>) {
        let event = Arc::new(event);
        let key: Arc<str> = match event.extension("partitionkey") {
            Some(ExtensionValue::String(key)) => Arc::from(key.as_str()),
            _ => Arc::from(""),
        };
        self.seq += 1;
        let mut routed = false;
        for lane in &self.lanes {
            if !lane.filter.matches(&event) {
                continue;
            }
            routed = true;
            let Ok(permit) = Arc::clone(&lane.room).acquire_owned().await else {
                continue;
            };
            lane.stats.routed(self.seq);
            let item = Item {
                event: Arc::clone(&event),
                key: Arc::clone(&key),
                seq: self.seq,
                attempts: 0,
                done: done.clone(),
                _permit: permit,
            };
            if lane.tx.send(item).is_err() {
                tracing::error!(sink = %lane.name, "lane stopped; event not queued");
            }
        }
        if !routed {
            self.unrouted += 1;
        }
    }

    /// Stops intake and waits until every lane has delivered (or dead-lettered) what it holds, or
    /// until `give_up` resolves; then flushes the sinks. Returns what was still pending.
    pub async fn finish(self, give_up: impl Future<Output = ()>) -> Unfinished {
        let Delivery {
            lanes, dead_letter, ..
        } = self;
        let mut tasks = Vec::with_capacity(lanes.len());
        let mut kept = Vec::with_capacity(lanes.len());
        for lane in lanes {
            drop(lane.tx);
            tasks.push(lane.task);
            kept.push((lane.name, lane.stats, lane.sink));
        }
        let all = futures_util::future::join_all(tasks.iter_mut());
        let timed_out = tokio::select! {
            _ = all => false,
            () = give_up => true,
        };
        let mut unfinished = Unfinished::default();
        for ((name, stats, sink), task) in kept.into_iter().zip(tasks) {
            if timed_out && !task.is_finished() {
                task.abort();
                unfinished
                    .pending
                    .push((name, stats.depth.load(Ordering::Relaxed)));
                continue;
            }
            flush(&*sink).await;
        }
        if let Some(sink) = dead_letter {
            flush(&*sink).await;
        }
        unfinished
    }
}

async fn flush(sink: &dyn Sink) {
    let result = match sink.flush().await {
        Ok(receipt) => receipt.await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::error!(sink = sink.name(), error = %err, "flush failed");
    }
}

/// Cheap jitter without a dependency: xorshift seeded from the clock.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Self(nanos | 1)
    }

    /// A fraction in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
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

struct Lane {
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
    /// Events published to the sink and not yet acknowledged or failed.
    flying: usize,
    resume_at: Option<Instant>,
    jitter: Jitter,
}

impl Lane {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
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
            let refused = accepted.is_err();
            flights.push(Box::pin(async move {
                let result = match accepted {
                    Ok(receipt) => receipt.await,
                    Err(err) => Err(err),
                };
                Landed::Sink(item, result, started)
            }));
            if refused {
                // Learn about the refusal (and back off) before publishing anything else.
                return;
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
                if self.failures > 0 {
                    tracing::info!(
                        sink = self.sink.name(),
                        failures = self.failures,
                        "sink reachable again; resuming full window"
                    );
                }
                self.failures = 0;
                self.stats.failures.store(0, Ordering::Relaxed);
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
                self.failures = self.failures.saturating_add(1);
                *lock(&self.stats.last_error) = err.to_string();
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
                if self.failures == 1 || self.failures.is_power_of_two() {
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
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            ..RetryPolicy::default()
        };
        let delays: Vec<u128> = (1..=6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn latency_quantiles_are_close() {
        let mut latency = Latency::default();
        for micros in 1..=1000u64 {
            latency.record(Duration::from_micros(micros));
        }
        let p50 = latency.quantile(0.5).expect("p50").as_micros() as f64;
        let p99 = latency.quantile(0.99).expect("p99").as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.13, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.13, "p99 {p99}");
        for micros in [0u64, 7, 8, 9, 15, 16, 1_000_000, u64::MAX >> 20] {
            let i = Latency::index(micros);
            assert!(Latency::lower_bound(i) <= micros, "{micros}");
        }
    }

    #[test]
    fn jitter_is_a_fraction() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let x = j.next();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
