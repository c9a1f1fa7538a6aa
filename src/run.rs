//! `run`: the live bridge. Watches feed the deriver; its facts go through the lanes; each fact
//! every routed sink finished with is recorded in the checkpoint, so a restart publishes only
//! what is not done. With `--leader-election` only the Lease holder gets this far. `record`
//! writes what the same watches see as a recording.

use crate::admin::Admin;
use crate::app::{AppError, Outcome, ReplayReport, SinkReport, open_sinks_with, shutdown_signal};
use crate::checkpoint::{Checkpoint, CheckpointSpec, Progress};
use crate::cli::{RecordArgs, RunArgs};
use crate::delivery::Delivery;
use crate::derive::Deriver;
use crate::encode;
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::{Metrics, Role};
use crate::source::live::{self, Input};
use crate::source::recording::{Change, Observed};
use chrono::Utc;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long Event facts of a workflow the Workflow watch has not shown are held before the
/// workflow counts as gone (deleted before the bridge saw it) and its Events speak for it.
const UNSEEN_GRACE: Duration = Duration::from_secs(10);

/// How often retention is applied.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Shortest retention: Kubernetes keeps Events an hour, and a run forgotten sooner could be
/// brought back by its Events.
const MIN_RETENTION: Duration = Duration::from_secs(3600);

fn setup(message: impl Into<String>) -> AppError {
    AppError::Setup(message.into())
}

fn duration(flag: &str, text: &str) -> Result<Duration, AppError> {
    sink_core::parse_duration(text).map_err(|e| setup(format!("--{flag} {text}: {e}")))
}

fn own_namespace() -> Option<String> {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "kfp-event-bridge".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}_{:x}{nanos:08x}", std::process::id())
}

/// What the watches have shown to exist, per workflow watch.
#[derive(Default)]
struct Presence {
    alive: Vec<HashSet<String>>,
    listing: Vec<Option<HashSet<String>>>,
    /// Deleted workflows, forgotten by the deriver once the retention has passed.
    deleted: VecDeque<(i64, String)>,
    /// Workflows with held Event facts that no Workflow watch shows, since when.
    unseen: HashMap<String, tokio::time::Instant>,
}

impl Presence {
    fn is_alive(&self, uid: &str) -> bool {
        self.alive.iter().any(|a| a.contains(uid))
    }
}

/// `run`: until a signal (exit 0 once in-flight events are done or the shutdown timeout passed)
/// or the loss of leadership (an error: the process stops publishing at once).
pub async fn run(args: &RunArgs) -> Result<(Outcome, ReplayReport), AppError> {
    run_with(crate::sinks::registry(), args).await
}

/// [`run`] with the sinks `registry` has.
pub async fn run_with(
    registry: &sink_core::Registry,
    args: &RunArgs,
) -> Result<(Outcome, ReplayReport), AppError> {
    let encode_config = args.encode.config()?;
    let plan = args.delivery.plan()?;
    let retention = duration("retention", &args.retention)?;
    if retention < MIN_RETENTION {
        return Err(setup(format!(
            "--retention {}: at least 1h (Kubernetes keeps Events an hour)",
            args.retention
        )));
    }
    let flush_every = duration("checkpoint-interval", &args.checkpoint_interval)?;
    if flush_every.is_zero() {
        return Err(setup("--checkpoint-interval must be above zero"));
    }
    let spec = match &args.checkpoint {
        Some(text) => CheckpointSpec::parse(text).map_err(setup)?,
        None => match own_namespace() {
            Some(namespace) => CheckpointSpec::ConfigMap {
                namespace,
                name: "kfp-event-bridge-checkpoint".into(),
                shards: crate::checkpoint::DEFAULT_SHARDS,
            },
            None => {
                return Err(setup(
                    "--checkpoint is required outside a cluster: file:DIR, configmap:NAMESPACE/NAME, or none to publish without one",
                ));
            }
        },
    };
    let lease = if args.leader_election {
        Some((
            duration("lease-duration", &args.lease_duration)?,
            duration("renew-deadline", &args.renew_deadline)?,
            duration("lease-retry-period", &args.lease_retry_period)?,
        ))
    } else {
        None
    };
    if let Some((lease_duration, renew, retry)) = lease
        && (retry.is_zero() || renew <= retry || lease_duration <= renew)
    {
        return Err(setup(
            "leader election wants lease duration > renew deadline > retry period > 0",
        ));
    }
    let mut admin = Admin::start(&args.admin, "127.0.0.1:8080").await?;
    let metrics = admin.as_ref().map(|a| Arc::clone(&a.metrics));
    if let Some(m) = &metrics {
        m.expect_watches();
        m.set_role(if lease.is_some() {
            Role::Standby
        } else {
            Role::Single
        });
    }
    let client = live::client(args.watch.kubeconfig.as_deref())
        .await
        .map_err(AppError::Live)?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let leadership = match lease {
        None => None,
        Some((lease_duration, renew_deadline, retry_period)) => {
            let namespace = args
                .leader_election_namespace
                .clone()
                .or_else(own_namespace)
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let config = LeaseConfig {
                namespace,
                name: args.leader_election_name.clone(),
                identity: args
                    .leader_election_identity
                    .clone()
                    .unwrap_or_else(default_identity),
                lease_duration,
                renew_deadline,
                retry_period,
            };
            tokio::select! {
                held = Elector::new(&client, config).acquire() => Some(held),
                () = &mut shutdown => return Ok((Outcome::Clean, ReplayReport::default())),
            }
        }
    };
    if let (Some(m), Some(_)) = (&metrics, &leadership) {
        m.set_role(Role::Leader);
    }

    let sinks = open_sinks_with(registry, &plan).await?;
    let checkpoint = Checkpoint::open(&spec, Some(&client))
        .await
        .map_err(AppError::Live)?;
    let mut derive_config = args.derive.config();
    derive_config.history_before = Some(Utc::now() - retention);
    derive_config.defer_event_facts = true;
    let mut deriver = Deriver::new(derive_config);
    checkpoint.restore(&mut deriver);
    tracing::info!(
        checkpoint = ?spec,
        entries = checkpoint.len(),
        "checkpoint loaded"
    );

    let delivery = Delivery::start(sinks.0, sinks.1, &plan.lanes, &plan.retry);
    let lanes = delivery.stats();
    if let Some(admin) = admin.as_mut() {
        admin.watch_delivery(&delivery);
    }
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (watch_ids, mut inputs) = live::watch(&client, &args.watch.config());
    if let Some(m) = &metrics {
        m.watches(&watch_ids);
    }
    let mut live = Live {
        deriver,
        checkpoint,
        progress: Progress::default(),
        delivery,
        done_tx,
        done_rx,
        encode: encode_config,
        undurable_max: plan.lanes.window,
        report: ReplayReport::default(),
        metrics: metrics.clone(),
    };
    let mut presence = Presence {
        alive: vec![HashSet::new(); watch_ids.len()],
        listing: vec![None; watch_ids.len()],
        ..Presence::default()
    };
    let mut synced = vec![false; watch_ids.len()];
    // Objects reported as unreadable (by uid), so each is logged once.
    let mut undecodable: HashSet<String> = HashSet::new();
    // A watch that failed or is re-listing, until it delivers again. While a Workflow watch is
    // down the Event watch can run ahead of it by any time, so nothing counts as unseen then.
    let mut down = vec![false; watch_ids.len()];
    let sweep_unseen = args.watch.config().label_selector.is_none();
    let mut flush = tokio::time::interval(flush_every);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = leadership.as_ref().map(|l| l.lost());
    let lost = async move {
        match lost {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);

    loop {
        let input = tokio::select! {
            biased;
            () = &mut lost => {
                // Another replica publishes now: stop at once, write nothing more.
                return Err(AppError::LeadershipLost);
            }
            () = &mut shutdown => {
                live.report.interrupted = true;
                break;
            }
            Some(token) = live.done_rx.recv() => {
                live.done(token);
                continue;
            }
            _ = flush.tick() => {
                live.flush().await;
                continue;
            }
            // With a label selector an unseen workflow may just be filtered out, not deleted:
            // its Events then speak only through its DELETED watch event.
            _ = sweep.tick(), if sweep_unseen && watch_ids.iter().enumerate().all(|(i, id)| id.resource != "workflows" || (synced[i] && !down[i])) => {
                Next::Facts(unseen_gone(&mut live.deriver, &mut presence))
            }
            _ = prune.tick() => {
                apply_retention(&mut live.checkpoint, &mut live.deriver, &mut presence, retention);
                continue;
            }
            input = inputs.next() => match input {
                Some(input) => Next::Input(input),
                None => break,
            },
        };
        let facts = match input {
            Next::Facts(facts) => facts,
            Next::Input(Input::Listing(i)) => {
                if let Some(m) = &metrics {
                    m.watch_listing(i);
                }
                went_down(&mut down, i, &watch_ids, &mut presence);
                if watch_ids[i].resource == "workflows" {
                    presence.listing[i] = Some(HashSet::new());
                }
                continue;
            }
            Next::Input(Input::Listed(i)) => {
                let mut facts = Vec::new();
                if let Some(listed) = presence.listing[i].take() {
                    // Workflows gone while the watch was away: their Events speak for them now.
                    for uid in presence.alive[i].difference(&listed) {
                        facts.extend(live.deriver.gone(uid));
                    }
                    presence.alive[i] = listed;
                }
                if !std::mem::replace(&mut synced[i], true) {
                    tracing::info!(watch = %watch_ids[i], "watch synced");
                }
                if let Some(m) = &metrics {
                    m.watch_listed(i);
                }
                down[i] = false;
                facts
            }
            Next::Input(Input::Undecodable {
                watch,
                name,
                uid,
                error,
            }) => {
                // Skipped like a bad recording line; logged once per object, counted each time.
                live.report.counts.bad_lines += 1;
                let key = if uid.is_empty() { name.clone() } else { uid };
                if undecodable.insert(key) {
                    tracing::warn!(watch = %watch_ids[watch], object = %name, error = %error, "object cannot be read; skipped (further changes to it are counted in kfp_event_bridge_decode_errors_total)");
                }
                if let Some(m) = &metrics {
                    m.watch_event(watch);
                    m.derive_stats(live.deriver.stats(), live.report.counts.bad_lines);
                }
                continue;
            }
            Next::Input(Input::Failed(i, err)) => {
                tracing::warn!(watch = %watch_ids[i], error = %err, "watch failed; retrying with backoff");
                if let Some(m) = &metrics {
                    m.watch_failed(i, &err);
                }
                went_down(&mut down, i, &watch_ids, &mut presence);
                continue;
            }
            Next::Input(Input::Observed(index, observed)) => {
                down[index] = false;
                let facts = observe(&mut live, &mut presence, index, &observed);
                let starts = live.deriver.take_pod_starts();
                if let Some(m) = &metrics {
                    m.watch_event(index);
                    // A pod seen past Pending while its watch replays a list was not just seen
                    // starting: only changes the synced watch delivers are timed.
                    if synced[index] && presence.listing[index].is_none() {
                        m.pod_starts(&starts, Utc::now());
                    }
                    m.derive_stats(live.deriver.stats(), live.report.counts.bad_lines);
                }
                facts
            }
        };
        if let Some(m) = &metrics {
            m.facts(&facts);
        }
        // Sending waits while the lanes are full; a signal or a lost Lease must still get through.
        let interrupt = tokio::select! {
            biased;
            () = &mut lost => Some(true),
            () = &mut shutdown => Some(false),
            () = live.publish(facts) => None,
        };
        match interrupt {
            Some(true) => return Err(AppError::LeadershipLost),
            Some(false) => {
                live.report.interrupted = true;
                break;
            }
            None => {}
        }
    }

    // Shutdown: the lanes finish what they hold (up to the timeout), the done facts are
    // recorded, the checkpoint written, the Lease given up.
    let Live {
        mut deriver,
        mut checkpoint,
        mut progress,
        delivery,
        mut done_rx,
        mut report,
        ..
    } = live;
    tracing::info!(
        in_flight = progress.in_flight(),
        "stopping: waiting for in-flight events"
    );
    report.unrouted = delivery.unrouted();
    let unfinished = delivery
        .finish(tokio::time::sleep(plan.shutdown_timeout))
        .await;
    while let Ok(token) = done_rx.try_recv() {
        progress.done(token, &mut checkpoint, &mut deriver, Utc::now().timestamp());
    }
    match checkpoint.flush().await {
        Ok(()) => tracing::info!(
            entries = checkpoint.len(),
            writes = checkpoint.stats().writes,
            failures = checkpoint.stats().failures,
            "checkpoint written"
        ),
        Err(err) => tracing::error!(
            error = %err,
            "final checkpoint write failed; undone facts will be published again"
        ),
    }
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    report.stats = deriver.stats().clone();
    report.sinks = lanes
        .iter()
        .map(|(name, lane)| SinkReport::from_lane(name, lane, &unfinished))
        .collect();
    let outcome = if report
        .sinks
        .iter()
        .any(|s| s.undeliverable > 0 || s.pending > 0)
    {
        Outcome::Undelivered
    } else {
        Outcome::Clean
    };
    Ok((outcome, report))
}

/// Watch `i` failed or re-lists: if it watches Workflows, the unseen timers start over once it
/// is back.
fn went_down(down: &mut [bool], i: usize, ids: &[live::WatchId], presence: &mut Presence) {
    down[i] = true;
    if ids[i].resource == "workflows" {
        presence.unseen.clear();
    }
}

/// Workflows whose Events arrived but which no Workflow watch has shown for a while were
/// deleted before the bridge saw them: their held Event facts come out.
fn unseen_gone(deriver: &mut Deriver, presence: &mut Presence) -> Vec<crate::model::Fact> {
    let now = tokio::time::Instant::now();
    let holding = deriver.holding();
    presence.unseen.retain(|uid, _| holding.contains(uid));
    let mut facts = Vec::new();
    for uid in holding {
        if presence.is_alive(&uid) {
            presence.unseen.remove(&uid);
            continue;
        }
        let since = *presence.unseen.entry(uid.clone()).or_insert(now);
        if now.duration_since(since) >= UNSEEN_GRACE {
            presence.unseen.remove(&uid);
            facts.extend(deriver.gone(&uid));
        }
    }
    facts
}

/// Notes which workflows exist, and derives the facts an observation brings.
fn observe(
    live: &mut Live,
    presence: &mut Presence,
    index: usize,
    observed: &Observed,
) -> Vec<crate::model::Fact> {
    live.report.counts.lines += 1;
    if let Observed::Workflow(change, wf) = observed {
        let uid = wf.metadata.uid.clone();
        if *change == Change::Deleted {
            presence.alive[index].remove(&uid);
            presence
                .deleted
                .push_back((Utc::now().timestamp(), uid.clone()));
            // What the final status showed comes first, then what only its Events said.
            let mut facts = live.deriver.observe(observed);
            facts.extend(live.deriver.gone(&uid));
            return facts;
        } else {
            if let Some(listing) = &mut presence.listing[index] {
                listing.insert(uid.clone());
            }
            presence.alive[index].insert(uid);
        }
    }
    let facts = live.deriver.observe(observed);
    for (level, notice) in live.deriver.take_notices() {
        crate::derive::log_notice(level, &notice, None);
    }
    facts
}

/// What the main loop acts on next.
enum Next {
    Input(Input),
    Facts(Vec<crate::model::Fact>),
}

/// The live pipeline's state between the watches and the lanes.
struct Live {
    deriver: Deriver,
    checkpoint: Checkpoint,
    progress: Progress,
    delivery: Delivery,
    done_tx: tokio::sync::mpsc::UnboundedSender<u64>,
    done_rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    encode: encode::EncodeConfig,
    /// Facts sent but not durably recorded as done (in flight, or done since the last checkpoint
    /// write) are kept at most this many: what a `kill -9` can make the next start send again.
    undurable_max: usize,
    report: ReplayReport,
    metrics: Option<Arc<Metrics>>,
}

impl Live {
    fn done(&mut self, token: u64) {
        self.progress.done(
            token,
            &mut self.checkpoint,
            &mut self.deriver,
            Utc::now().timestamp(),
        );
    }

    async fn flush(&mut self) {
        if let Err(err) = self.checkpoint.flush().await {
            tracing::warn!(error = %err, "checkpoint write failed; retrying at the next flush");
        }
        if let Some(m) = &self.metrics {
            let stats = self.checkpoint.stats();
            m.checkpoint(stats.writes, stats.failures);
        }
    }

    /// Encodes and sends facts, keeping the undurable ones within bounds: when the bound is
    /// reached the checkpoint is written, or the oldest in flight awaited.
    async fn publish(&mut self, facts: Vec<crate::model::Fact>) {
        for fact in facts {
            let event = match encode::encode(&fact, &self.encode) {
                Ok(event) => event,
                Err(err) => {
                    tracing::error!(error = %err, "fact could not be encoded");
                    continue;
                }
            };
            while self.progress.in_flight() + self.checkpoint.unflushed() >= self.undurable_max {
                // Write once at least half the bound is done-but-unwritten (or nothing is in
                // flight): writes cover many facts each, and the bound still holds.
                let unflushed = self.checkpoint.unflushed();
                if unflushed > 0
                    && (unflushed >= self.undurable_max.div_ceil(2)
                        || self.progress.in_flight() == 0)
                {
                    self.flush().await;
                    if self.checkpoint.unflushed() > 0 {
                        // The store refuses writes: wait a little rather than spin.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } else if let Some(token) = self.done_rx.recv().await {
                    self.done(token);
                }
            }
            // An offloaded run keeps its marks instead of shrinking to a tombstone.
            let run_end = fact.closes_run().then(|| {
                let at = fact
                    .time
                    .map_or_else(|| Utc::now().timestamp(), |t| t.timestamp());
                (at, crate::model::Outcome::of_phase(&fact.run.phase))
            });
            let token = self
                .progress
                .add(&fact.run.uid, fact.mark(), fact.run.attempt, run_end);
            self.report.counts.events += 1;
            self.delivery
                .send_tracked(event, token, &self.done_tx)
                .await;
        }
    }
}

fn apply_retention(
    checkpoint: &mut Checkpoint,
    deriver: &mut Deriver,
    presence: &mut Presence,
    retention: Duration,
) {
    let now = Utc::now();
    let horizon = now - retention;
    deriver.set_history_before(Some(horizon));
    let before = horizon.timestamp();
    for uid in checkpoint.prune(before, |uid| presence.is_alive(uid)) {
        deriver.forget(&uid);
    }
    while presence.deleted.front().is_some_and(|(at, _)| *at < before) {
        if let Some((_, uid)) = presence.deleted.pop_front()
            && !presence.is_alive(&uid)
        {
            deriver.forget(&uid);
        }
    }
}

/// `record FILE`: writes every watch event of the same watches `run` uses as a recording line,
/// `managedFields` stripped, until interrupted.
pub async fn record(args: &RecordArgs) -> Result<(Outcome, ReplayReport), AppError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::{WatchStreamExt, watcher};
    let client = live::client(args.watch.kubeconfig.as_deref())
        .await
        .map_err(AppError::Live)?;
    let config = args.watch.config();
    let mut out: Box<dyn Write + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args.file)
                .map_err(|source| AppError::Input {
                    path: args.file.display().to_string(),
                    source,
                })?,
        )
    };
    let kinds = [
        (
            GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
            "workflows",
            false,
        ),
        (GroupVersionKind::gvk("", "v1", "Event"), "events", true),
    ];
    let scopes = if config.namespaces.is_empty() {
        vec![String::new()]
    } else {
        config.namespaces.clone()
    };
    let mut streams = futures_util::stream::SelectAll::new();
    for namespace in &scopes {
        for (gvk, plural, is_event) in &kinds {
            if *is_event && !config.events {
                continue;
            }
            let resource = ApiResource::from_gvk_with_plural(gvk, plural);
            let api: Api<DynamicObject> = if namespace.is_empty() {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), namespace, &resource)
            };
            let mut watch = watcher::Config::default().page_size(live::PAGE_SIZE);
            if *is_event {
                watch = watch.fields(live::EVENT_FIELD_SELECTOR);
            } else if let Some(selector) = &config.label_selector {
                watch = watch.labels(selector);
            }
            let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
            streams.push(
                watcher(api, watch)
                    .default_backoff()
                    .map(move |e| (api_version.clone(), kind.clone(), e))
                    .boxed(),
            );
        }
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut report = ReplayReport::default();
    loop {
        let (api_version, kind, event) = tokio::select! {
            () = &mut shutdown => break,
            next = streams.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let (change, mut object) = match event {
            Ok(watcher::Event::InitApply(o)) => ("ADDED", o),
            Ok(watcher::Event::Apply(o)) => ("MODIFIED", o),
            Ok(watcher::Event::Delete(o)) => ("DELETED", o),
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "watch failed; retrying with backoff");
                continue;
            }
        };
        object.metadata.managed_fields = None;
        let mut value = serde_json::to_value(&object).unwrap_or_default();
        value["apiVersion"] = serde_json::Value::String(api_version);
        value["kind"] = serde_json::Value::String(kind);
        let line = serde_json::json!({"type": change, "object": value});
        let written = serde_json::to_writer(&mut out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(source) = written {
            return Err(AppError::Input {
                path: args.file.display().to_string(),
                source,
            });
        }
        report.counts.lines += 1;
    }
    Ok((Outcome::Clean, report))
}

impl SinkReport {
    pub(crate) fn from_lane(
        name: &str,
        lane: &crate::delivery::LaneStats,
        unfinished: &crate::delivery::Unfinished,
    ) -> Self {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        SinkReport {
            name: name.to_owned(),
            routed: load(&lane.routed),
            delivered: load(&lane.delivered),
            retried: load(&lane.retried),
            failed: load(&lane.failed),
            dead_lettered: load(&lane.dead_lettered),
            undeliverable: load(&lane.undeliverable),
            pending: unfinished
                .pending
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, p)| *p),
            p50: lane.latency_quantile(0.5),
            p99: lane.latency_quantile(0.99),
        }
    }
}
