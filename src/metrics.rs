//! Metrics pushed as the bridge works: the KFP run metrics (`kfp_*`, per finished run or task one
//! labelled histogram), and the bridge's own state (derivation counters, watches, checkpoint,
//! role) that the admin server's collector exposes as `kfp_event_bridge_*` and its
//! readiness judges ([`crate::admin`]).
//!
//! The hot path only bumps atomics; lane counters live in the lanes and are read at scrape time.

use crate::derive::{PodStart, Stats};
use crate::model::{Fact, FactKind, FailureKind};
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Run durations, seconds: 10 s to a day.
const RUN_BUCKETS: [f64; 13] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0,
];
/// Task durations, seconds: 1 s to 6 h.
const TASK_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];
/// Pod pending times, seconds: 1 s to 30 min.
const PENDING_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// A watch that failed counts as failing this long unless it delivers again: kube-runtime's
/// watcher resumes quietly (nothing to report until an object changes), and while the server is
/// down its retries fail at least every 30 s (its backoff's cap).
const WATCH_ERROR_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

impl WatchState {
    pub(crate) fn failing(&self) -> Option<&str> {
        match &self.error {
            Some((err, at)) if at.elapsed() < WATCH_ERROR_HOLD => Some(err),
            _ => None,
        }
    }
}

/// The `pipeline` label of pipelines beyond the configured number of distinct names.
pub const OTHER_PIPELINE: &str = "other";

pub(crate) type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}
fn task_histogram() -> Histogram {
    Histogram::new(TASK_BUCKETS)
}
fn pending_histogram() -> Histogram {
    Histogram::new(PENDING_BUCKETS)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which replica this is, as far as leader election goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Leader election is on and no answer yet.
    Unknown = 0,
    /// Waiting for the Lease: another replica publishes.
    Standby = 1,
    /// Holds the Lease and publishes.
    Leader = 2,
    /// Leader election is off: this replica publishes.
    Single = 3,
}

/// One watch, as readiness and the metrics see it.
#[derive(Debug)]
pub(crate) struct WatchState {
    pub(crate) resource: &'static str,
    pub(crate) namespace: String,
    pub(crate) synced: bool,
    /// The last failure and when, cleared by the next object or list.
    pub(crate) error: Option<(String, Instant)>,
    pub(crate) restarts: u64,
    pub(crate) relists: u64,
    pub(crate) last_event: Option<Instant>,
}

/// Counters of derivation, copied from the deriver's [`Stats`] after each observation.
#[derive(Debug, Default)]
pub(crate) struct DeriveCounters {
    pub(crate) observations: AtomicU64,
    pub(crate) bad_lines: AtomicU64,
    pub(crate) node_decode_errors: AtomicU64,
    pub(crate) events_used: AtomicU64,
    pub(crate) events_merged: AtomicU64,
    pub(crate) events_unattributed: AtomicU64,
    pub(crate) offloaded_workflows: AtomicU64,
    pub(crate) history_skipped: AtomicU64,
}

/// The bridge's own state, pushed by the command's parts and read at scrape time by the admin
/// server's collector and readiness.
#[derive(Debug)]
pub struct Bridge {
    pub(crate) facts: [AtomicU64; FactKind::ALL.len()],
    pub(crate) derive: DeriveCounters,
    pub(crate) checkpoint_writes: AtomicU64,
    pub(crate) checkpoint_failures: AtomicU64,
    /// Publishing's waits at the duplicate bound for a checkpoint write: count, microseconds.
    pub(crate) checkpoint_waits: AtomicU64,
    pub(crate) checkpoint_wait_micros: AtomicU64,
    pub(crate) role: AtomicU8,
    pub(crate) watches: Mutex<Vec<WatchState>>,
    /// Whether this command watches the cluster (readiness then waits for the watches).
    pub(crate) live: AtomicU8,
    pub(crate) started: Instant,
}

/// KFP run metrics.
#[derive(Debug)]
struct Kfp {
    runs: Family<Labels, Counter>,
    run_duration: Histograms,
    tasks: Family<Labels, Counter>,
    task_duration: Histograms,
    pending: Histograms,
    warnings: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    run_retries: Family<Labels, Counter>,
    pipelines: Mutex<HashSet<String>>,
    max_pipelines: usize,
}

/// Everything the admin server exposes; shared by the command's parts.
#[derive(Debug)]
pub struct Metrics {
    bridge: Arc<Bridge>,
    kfp: Kfp,
    registry: Registry,
}

impl Metrics {
    /// `max_pipelines`: distinct `pipeline` label values before the rest share [`OTHER_PIPELINE`].
    pub fn new(max_pipelines: usize) -> Self {
        let bridge = Arc::new(Bridge {
            facts: Default::default(),
            derive: DeriveCounters::default(),
            checkpoint_writes: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            checkpoint_waits: AtomicU64::new(0),
            checkpoint_wait_micros: AtomicU64::new(0),
            role: AtomicU8::new(Role::Single as u8),
            watches: Mutex::new(Vec::new()),
            live: AtomicU8::new(0),
            started: Instant::now(),
        });
        let kfp = Kfp {
            runs: Family::default(),
            run_duration: Family::new_with_constructor(run_histogram),
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(task_histogram),
            pending: Family::new_with_constructor(pending_histogram),
            warnings: Family::default(),
            retries: Family::default(),
            run_retries: Family::default(),
            pipelines: Mutex::new(HashSet::new()),
            max_pipelines,
        };
        let mut registry = Registry::default();
        registry.register(
            "kfp_runs_finished",
            "KFP runs (Argo workflows) that finished, by namespace, pipeline and outcome",
            kfp.runs.clone(),
        );
        registry.register(
            "kfp_run_duration_seconds",
            "Run attempt duration from its start to its end (cluster timestamps)",
            kfp.run_duration.clone(),
        );
        registry.register(
            "kfp_tasks_finished",
            "Task attempts that finished, by namespace, pipeline and outcome (succeeded, cached, failed, skipped)",
            kfp.tasks.clone(),
        );
        registry.register(
            "kfp_task_duration_seconds",
            "Duration of task attempts that ran (not cached or skipped), node start to end",
            kfp.task_duration.clone(),
        );
        registry.register(
            "kfp_task_pending_seconds",
            "Pod pending time (scheduling, image pull, volume setup): pod creation until the live watch first shows it past Pending",
            kfp.pending.clone(),
        );
        registry.register(
            "kfp_task_lifecycle_warnings",
            "Pending-pod lifecycle warnings (KEP-12843), by category",
            kfp.warnings.clone(),
        );
        registry.register(
            "kfp_run_retries",
            "Runs started again after they ended (KFP retry, argo retry): attempts after the first",
            kfp.run_retries.clone(),
        );
        registry.register(
            "kfp_task_retries",
            "Task attempts after the first (retry policy)",
            kfp.retries.clone(),
        );
        Self {
            bridge,
            kfp,
            registry,
        }
    }

    /// The bridge's state, for the admin server's collector and readiness.
    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// Adds a collector read at scrape time (the admin server's, over [`Metrics::bridge`]).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Notes facts derived (before delivery): the per-type counters and the KFP metrics.
    pub fn facts(&self, facts: &[Fact]) {
        for fact in facts {
            self.bridge.facts[fact.kind as usize].fetch_add(1, Ordering::Relaxed);
            self.kfp(fact);
        }
    }

    /// Copies the deriver's counters.
    pub fn derive_stats(&self, stats: &Stats, bad_lines: u64) {
        let d = &self.bridge.derive;
        let set = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        set(&d.observations, stats.workflows_observed);
        set(&d.bad_lines, bad_lines);
        set(&d.node_decode_errors, stats.node_decode_errors);
        set(&d.events_used, stats.events_used);
        set(&d.events_merged, stats.events_merged);
        set(&d.events_unattributed, stats.events_unattributed);
        set(&d.offloaded_workflows, stats.offloaded_workflows);
        set(&d.history_skipped, stats.history_skipped);
    }

    /// Pods the live watch saw leave Pending at `now`.
    pub fn pod_starts(&self, starts: &[PodStart], now: DateTime<Utc>) {
        for start in starts {
            let seconds = (now - start.created).num_milliseconds().max(0) as f64 / 1e3;
            let labels = self.labels(&start.run.namespace, &start.run.pipeline_name, None);
            self.kfp.pending.get_or_create(&labels).observe(seconds);
        }
    }

    /// The checkpoint's write counts so far.
    pub fn checkpoint(&self, writes: u64, failures: u64) {
        let b = &self.bridge;
        b.checkpoint_writes.store(writes, Ordering::Relaxed);
        b.checkpoint_failures.store(failures, Ordering::Relaxed);
    }

    /// Publishing's waits at the duplicate bound for a checkpoint write so far.
    pub fn checkpoint_waits(&self, count: u64, time: std::time::Duration) {
        let b = &self.bridge;
        b.checkpoint_waits.store(count, Ordering::Relaxed);
        let micros = u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
        b.checkpoint_wait_micros.store(micros, Ordering::Relaxed);
    }

    pub fn set_role(&self, role: Role) {
        self.bridge.role.store(role as u8, Ordering::Relaxed);
    }

    /// Registers the watches of a live command, by the index its inputs carry.
    pub fn watches(&self, ids: &[crate::source::live::WatchId]) {
        self.bridge.live.store(1, Ordering::Relaxed);
        *lock(&self.bridge.watches) = ids
            .iter()
            .map(|id| WatchState {
                resource: id.resource,
                namespace: id.namespace.clone(),
                synced: false,
                error: None,
                restarts: 0,
                relists: 0,
                last_event: None,
            })
            .collect();
    }

    /// Marks a command as live before its watches exist (readiness waits for them).
    pub fn expect_watches(&self) {
        self.bridge.live.store(1, Ordering::Relaxed);
    }

    /// A watch delivered something: it works.
    pub fn watch_event(&self, index: usize) {
        if let Some(w) = lock(&self.bridge.watches).get_mut(index) {
            w.error = None;
            w.last_event = Some(Instant::now());
        }
    }

    /// A watch begins a (re-)list.
    pub fn watch_listing(&self, index: usize) {
        if let Some(w) = lock(&self.bridge.watches).get_mut(index) {
            if w.synced {
                w.relists += 1;
            }
            w.error = None;
        }
    }

    /// A watch finished a (re-)list.
    pub fn watch_listed(&self, index: usize) {
        if let Some(w) = lock(&self.bridge.watches).get_mut(index) {
            w.synced = true;
            w.error = None;
            w.last_event = Some(Instant::now());
        }
    }

    /// A watch failed; the watcher retries with backoff.
    pub fn watch_failed(&self, index: usize, error: &str) {
        if let Some(w) = lock(&self.bridge.watches).get_mut(index) {
            w.restarts += 1;
            w.error = Some((error.to_owned(), Instant::now()));
        }
    }

    fn kfp(&self, fact: &Fact) {
        let run = &fact.run;
        match fact.kind {
            FactKind::RunSucceeded | FactKind::RunFailed => {
                let outcome = run_outcome(fact);
                let labels = self.labels(&run.namespace, &run.pipeline_name, Some(outcome));
                self.kfp.runs.get_or_create(&labels).inc();
                if let Some(seconds) = seconds_between(run.started_at, run.finished_at) {
                    self.kfp
                        .run_duration
                        .get_or_create(&labels)
                        .observe(seconds);
                }
            }
            FactKind::TaskSucceeded | FactKind::TaskFailed | FactKind::TaskSkipped => {
                let Some(task) = &fact.task else { return };
                let outcome = match fact.kind {
                    FactKind::TaskSucceeded if task.cached => "cached",
                    FactKind::TaskSucceeded => "succeeded",
                    FactKind::TaskFailed => "failed",
                    _ => "skipped",
                };
                let labels = self.labels(&run.namespace, &run.pipeline_name, Some(outcome));
                self.kfp.tasks.get_or_create(&labels).inc();
                if matches!(outcome, "succeeded" | "failed")
                    && let Some(seconds) = seconds_between(task.started_at, task.finished_at)
                {
                    self.kfp
                        .task_duration
                        .get_or_create(&labels)
                        .observe(seconds);
                }
            }
            FactKind::TaskStarted => {
                if fact.task.as_ref().is_some_and(|t| t.attempt > 0) {
                    let labels = self.labels(&run.namespace, &run.pipeline_name, None);
                    self.kfp.retries.get_or_create(&labels).inc();
                }
            }
            FactKind::TaskWarning => {
                let category = fact.lifecycle.as_ref().map_or("", |l| l.category.as_str());
                let mut labels = self.labels(&run.namespace, &run.pipeline_name, None);
                labels.push(("category", category.to_owned()));
                self.kfp.warnings.get_or_create(&labels).inc();
            }
            FactKind::RunQueued => {}
            FactKind::RunStarted => {
                if run.attempt.retries > 0 {
                    let labels = self.labels(&run.namespace, &run.pipeline_name, None);
                    self.kfp.run_retries.get_or_create(&labels).inc();
                }
            }
        }
    }

    /// `namespace`, `pipeline` (capped) and optionally `outcome` labels.
    fn labels(&self, namespace: &str, pipeline: &str, outcome: Option<&str>) -> Labels {
        let pipeline = {
            let mut known = lock(&self.kfp.pipelines);
            if known.contains(pipeline) {
                pipeline.to_owned()
            } else if known.len() < self.kfp.max_pipelines {
                known.insert(pipeline.to_owned());
                pipeline.to_owned()
            } else {
                OTHER_PIPELINE.to_owned()
            }
        };
        let mut labels = vec![("namespace", namespace.to_owned()), ("pipeline", pipeline)];
        if let Some(outcome) = outcome {
            labels.push(("outcome", outcome.to_owned()));
        }
        labels
    }
}

/// `succeeded`, or why the run failed: `failed`, `error`, `terminated`, `stopped`,
/// `deadline_exceeded`.
fn run_outcome(fact: &Fact) -> &'static str {
    if fact.kind == FactKind::RunSucceeded {
        return "succeeded";
    }
    match fact.run.failure {
        Some(FailureKind::Error) => "error",
        Some(FailureKind::Terminated) => "terminated",
        Some(FailureKind::Stopped) => "stopped",
        Some(FailureKind::DeadlineExceeded) => "deadline_exceeded",
        _ => "failed",
    }
}

fn seconds_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<f64> {
    let millis = (to? - from?).num_milliseconds();
    (millis >= 0).then(|| millis as f64 / 1e3)
}
