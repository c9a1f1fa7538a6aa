//! What the admin server reports: bridge metrics (`kfp_event_bridge_*`), KFP run metrics
//! (`kfp_*`) and the state readiness is judged from.
//!
//! The hot path only bumps atomics and, per finished run or task, one labelled histogram; lane
//! counters live in the lanes ([`LaneStats`]) and are read at scrape time by a collector.

use crate::derive::{PodStart, Stats};
use crate::model::{Fact, FactKind, FailureKind};
use crate::pipeline::LaneStats;
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::fmt::Write as _;
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
    fn failing(&self) -> Option<&str> {
        match &self.error {
            Some((err, at)) if at.elapsed() < WATCH_ERROR_HOLD => Some(err),
            _ => None,
        }
    }
}

/// The `pipeline` label of pipelines beyond the configured number of distinct names.
pub const OTHER_PIPELINE: &str = "other";

type Labels = Vec<(&'static str, String)>;
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
struct WatchState {
    resource: &'static str,
    namespace: String,
    synced: bool,
    /// The last failure and when, cleared by the next object or list.
    error: Option<(String, Instant)>,
    restarts: u64,
    relists: u64,
    last_event: Option<Instant>,
}

/// One sink: its lane's counters and its last health check.
#[derive(Debug)]
struct SinkState {
    name: String,
    lane: Arc<LaneStats>,
    /// `None` until the first check answered.
    health: Option<Result<(), String>>,
}

/// The dead-letter sink: its name and its last health check (`None` until the first answered).
type DeadLetterState = (String, Option<Result<(), String>>);

/// Counters of derivation, copied from the deriver's [`Stats`] after each observation.
#[derive(Debug, Default)]
struct DeriveCounters {
    observations: AtomicU64,
    bad_lines: AtomicU64,
    node_decode_errors: AtomicU64,
    events_used: AtomicU64,
    events_merged: AtomicU64,
    events_unattributed: AtomicU64,
    offloaded_workflows: AtomicU64,
    history_skipped: AtomicU64,
}

/// The bridge's own state, read by the collector at scrape time.
#[derive(Debug)]
struct Bridge {
    facts: [AtomicU64; FactKind::ALL.len()],
    derive: DeriveCounters,
    checkpoint_writes: AtomicU64,
    checkpoint_failures: AtomicU64,
    role: AtomicU8,
    watches: Mutex<Vec<WatchState>>,
    /// Whether this command watches the cluster (readiness then waits for the watches).
    live: AtomicU8,
    sinks: Mutex<Vec<SinkState>>,
    dead_letter: Mutex<Option<DeadLetterState>>,
    started: Instant,
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
            role: AtomicU8::new(Role::Single as u8),
            watches: Mutex::new(Vec::new()),
            live: AtomicU8::new(0),
            sinks: Mutex::new(Vec::new()),
            dead_letter: Mutex::new(None),
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
        registry.register_collector(Box::new(Collect(Arc::clone(&bridge))));
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

    /// Registers the lanes of a delivery, by sink name.
    pub fn sinks(&self, lanes: &[(String, Arc<LaneStats>)]) {
        *lock(&self.bridge.sinks) = lanes
            .iter()
            .map(|(name, lane)| SinkState {
                name: name.clone(),
                lane: Arc::clone(lane),
                health: None,
            })
            .collect();
    }

    /// Records a sink's health check; returns the previous state when it changed.
    pub fn sink_health(&self, index: usize, result: Result<(), String>) -> Option<bool> {
        let mut sinks = lock(&self.bridge.sinks);
        let sink = sinks.get_mut(index)?;
        let was = sink.health.as_ref().map(Result::is_ok);
        let now = result.is_ok();
        sink.health = Some(result);
        (was != Some(now)).then_some(now)
    }

    /// Registers the dead-letter sink, by name.
    pub fn dead_letter(&self, name: &str) {
        *lock(&self.bridge.dead_letter) = Some((name.to_owned(), None));
    }

    /// Records the dead-letter sink's health check; returns the new state when it changed.
    pub fn dead_letter_health(&self, result: Result<(), String>) -> Option<bool> {
        let mut dead_letter = lock(&self.bridge.dead_letter);
        let (_, health) = dead_letter.as_mut()?;
        let was = health.as_ref().map(Result::is_ok);
        let now = result.is_ok();
        *health = Some(result);
        (was != Some(now)).then_some(now)
    }

    /// `(ready, report)`: every check with its state, one per line, failures first.
    pub fn readiness(&self) -> (bool, String) {
        let b = &self.bridge;
        let mut failed = Vec::new();
        let mut passed = Vec::new();
        let role = b.role.load(Ordering::Relaxed);
        match role {
            r if r == Role::Unknown as u8 => {
                failed.push("leader election: state not known yet".to_owned());
            }
            r if r == Role::Standby as u8 => {
                passed.push("leader election: standby (another replica publishes)".to_owned());
                return (true, report(&failed, &passed));
            }
            r if r == Role::Leader as u8 => passed.push("leader election: leader".to_owned()),
            _ => {}
        }
        let watches = lock(&b.watches);
        if b.live.load(Ordering::Relaxed) == 1 && watches.is_empty() {
            failed.push("watches: not started".to_owned());
        }
        for w in watches.iter() {
            let scope = if w.namespace.is_empty() {
                "all namespaces".to_owned()
            } else {
                w.namespace.clone()
            };
            match (w.failing(), w.synced) {
                (Some(err), _) => {
                    failed.push(format!("watch {} ({scope}): failing: {err}", w.resource))
                }
                (None, false) => failed.push(format!(
                    "watch {} ({scope}): first list not finished",
                    w.resource
                )),
                (None, true) => passed.push(format!("watch {} ({scope}): synced", w.resource)),
            }
        }
        drop(watches);
        for s in lock(&b.sinks).iter() {
            match (&s.health, s.lane.last_error()) {
                (Some(Err(err)), _) => failed.push(format!("sink {}: {err}", s.name)),
                (_, Some(err)) => {
                    failed.push(format!("sink {}: publishing fails: {err}", s.name));
                }
                (None, None) => failed.push(format!("sink {}: not checked yet", s.name)),
                (Some(Ok(())), None) => passed.push(format!("sink {}: ok", s.name)),
            }
        }
        // Without its dead-letter sink a failing event would be lost: not ready either.
        if let Some((name, health)) = lock(&b.dead_letter).as_ref() {
            match health {
                Some(Err(err)) => failed.push(format!("dead-letter sink {name}: {err}")),
                None => failed.push(format!("dead-letter sink {name}: not checked yet")),
                Some(Ok(())) => passed.push(format!("dead-letter sink {name}: ok")),
            }
        }
        (failed.is_empty(), report(&failed, &passed))
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

fn report(failed: &[String], passed: &[String]) -> String {
    let mut out = String::new();
    for line in failed {
        let _ = writeln!(out, "FAIL {line}");
    }
    for line in passed {
        let _ = writeln!(out, "ok   {line}");
    }
    out
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

/// Reads the bridge's state at scrape time.
#[derive(Debug)]
struct Collect(Arc<Bridge>);

/// Encodes one metric family with a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    members: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in members {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let facts: Vec<(Labels, ConstCounter<u64>)> = FactKind::ALL
            .iter()
            .map(|kind| {
                (
                    vec![("type", kind.type_suffix().to_owned())],
                    counter(load(&b.facts[*kind as usize])),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_facts",
            "Facts derived, by CloudEvent type suffix",
            MetricType::Counter,
            &facts,
        )?;
        let d = &b.derive;
        for (name, help, value) in [
            (
                "kfp_event_bridge_workflow_observations",
                "Workflow observations derived from (watch events or recording lines)",
                &d.observations,
            ),
            (
                "kfp_event_bridge_decode_errors",
                "Input that could not be decoded: bad recording lines, watched objects that cannot be read, undecodable compressedNodes",
                &d.bad_lines,
            ),
            (
                "kfp_event_bridge_kubernetes_events_used",
                "Kubernetes Events turned into facts because the status could not say",
                &d.events_used,
            ),
            (
                "kfp_event_bridge_kubernetes_events_merged",
                "Kubernetes Events whose fact the status gave too",
                &d.events_merged,
            ),
            (
                "kfp_event_bridge_kubernetes_events_unattributed",
                "workflow-controller Events whose workflow or node could not be identified",
                &d.events_unattributed,
            ),
            (
                "kfp_event_bridge_offloaded_workflows",
                "Workflows seen with their node status offloaded to Argo's database",
                &d.offloaded_workflows,
            ),
            (
                "kfp_event_bridge_history_skipped",
                "Observations of runs finished before the retention window or already done",
                &d.history_skipped,
            ),
            (
                "kfp_event_bridge_checkpoint_writes",
                "Checkpoint writes that succeeded",
                &b.checkpoint_writes,
            ),
            (
                "kfp_event_bridge_checkpoint_failures",
                "Checkpoint writes that failed (retried at the next flush)",
                &b.checkpoint_failures,
            ),
        ] {
            let mut value = load(value);
            if name == "kfp_event_bridge_decode_errors" {
                value += load(&d.node_decode_errors);
            }
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(value).encode(metric)?;
        }
        let role = b.role.load(Ordering::Relaxed);
        let roles: Vec<(Labels, ConstGauge<i64>)> = ["unknown", "standby", "leader", "single"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    vec![("role", (*name).to_owned())],
                    ConstGauge::new(i64::from(role == i as u8)),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_role",
            "1 for this replica's role: leader, standby, single (no leader election) or unknown",
            MetricType::Gauge,
            &roles,
        )?;
        ConstGauge::new(b.started.elapsed().as_secs_f64()).encode(encoder.encode_descriptor(
            "kfp_event_bridge_uptime_seconds",
            "Seconds since the process started",
            None,
            MetricType::Gauge,
        )?)?;

        let watches = lock(&b.watches);
        let labels = |w: &WatchState| -> Labels {
            vec![
                ("resource", w.resource.to_owned()),
                ("namespace", w.namespace.clone()),
            ]
        };
        let gauges = |f: &dyn Fn(&WatchState) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
            watches
                .iter()
                .map(|w| (labels(w), ConstGauge::new(f(w))))
                .collect()
        };
        let counters = |f: &dyn Fn(&WatchState) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
            watches.iter().map(|w| (labels(w), counter(f(w)))).collect()
        };
        family(
            &mut encoder,
            "kfp_event_bridge_watch_up",
            "1 when the watch has listed and its last attempt did not fail",
            MetricType::Gauge,
            &gauges(&|w| f64::from(u8::from(w.synced && w.failing().is_none()))),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_restarts",
            "Watch failures after which the watcher retried with backoff",
            MetricType::Counter,
            &counters(&|w| w.restarts),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_relists",
            "Full re-lists after the first list (410 Gone, desynchronisation)",
            MetricType::Counter,
            &counters(&|w| w.relists),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_last_event_age_seconds",
            "Seconds since the watch last delivered an object or finished a list (-1: never)",
            MetricType::Gauge,
            &gauges(&|w| w.last_event.map_or(-1.0, |t| t.elapsed().as_secs_f64())),
        )?;
        drop(watches);

        let sinks = lock(&b.sinks);
        let sink_labels = |s: &SinkState| -> Labels { vec![("sink", s.name.clone())] };
        for (name, help, pick) in [
            (
                "kfp_event_bridge_events_routed",
                "Events routed to the sink's lane",
                &(|l: &LaneStats| l.routed.load(Ordering::Relaxed)) as &dyn Fn(&LaneStats) -> u64,
            ),
            (
                "kfp_event_bridge_events_published",
                "Events the sink acknowledged",
                &|l: &LaneStats| l.delivered.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_retried",
                "Publish attempts that failed transiently and were retried",
                &|l: &LaneStats| l.retried.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_failed",
                "Events the sink refused for good or that ran out of attempts",
                &|l: &LaneStats| l.failed.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_dead_lettered",
                "Failed events the dead-letter sink acknowledged",
                &|l: &LaneStats| l.dead_lettered.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_undeliverable",
                "Failed events with no dead-letter sink, or refused by it: lost",
                &|l: &LaneStats| l.undeliverable.load(Ordering::Relaxed),
            ),
        ] {
            let members: Vec<(Labels, ConstCounter<u64>)> = sinks
                .iter()
                .map(|s| (sink_labels(s), counter(pick(&s.lane))))
                .collect();
            family(&mut encoder, name, help, MetricType::Counter, &members)?;
        }
        let gauge_members = |f: &dyn Fn(&SinkState) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
            sinks
                .iter()
                .map(|s| (sink_labels(s), ConstGauge::new(f(s))))
                .collect()
        };
        family(
            &mut encoder,
            "kfp_event_bridge_lane_depth",
            "Events queued or in flight in the sink's lane",
            MetricType::Gauge,
            &gauge_members(&|s| load(&s.lane.depth) as f64),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_oldest_pending_seconds",
            "Age of the oldest event queued or in flight in the sink's lane (0 when empty)",
            MetricType::Gauge,
            &gauge_members(&|s| s.lane.oldest_pending().map_or(0.0, |d| d.as_secs_f64())),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_sink_consecutive_failures",
            "Consecutive failed publish attempts (0 while the sink takes events)",
            MetricType::Gauge,
            &gauge_members(&|s| load(&s.lane.failures) as f64),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_sink_up",
            "1 when the sink's last health check passed and publishing is not failing",
            MetricType::Gauge,
            &gauge_members(&|s| {
                f64::from(u8::from(
                    matches!(s.health, Some(Ok(()))) && s.lane.last_error().is_none(),
                ))
            }),
        )?;
        let dead_letter: Vec<(Labels, ConstGauge<f64>)> = lock(&b.dead_letter)
            .iter()
            .map(|(name, health)| {
                let up = matches!(health, Some(Ok(())));
                (
                    vec![("sink", name.clone())],
                    ConstGauge::new(f64::from(u8::from(up))),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_dead_letter_sink_up",
            "1 when the dead-letter sink's last health check passed",
            MetricType::Gauge,
            &dead_letter,
        )?;
        let mut metric = encoder.encode_descriptor(
            "kfp_event_bridge_publish_latency_seconds",
            "Publish-to-acknowledgement latency of delivered events",
            None,
            MetricType::Histogram,
        )?;
        for s in sinks.iter() {
            let h = s.lane.latency_histogram();
            let labels = sink_labels(s);
            metric
                .encode_family(&labels)?
                .encode_histogram::<Labels>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}
