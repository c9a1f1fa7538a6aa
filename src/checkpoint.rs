//! The checkpoint: which facts are done — delivered to, or dead-lettered by, every sink they
//! were routed to — so that after a restart (including `kill -9`) the re-list publishes only
//! what is not.
//!
//! Per workflow uid it keeps either the [`Mark`]s of its done facts (10 bytes per node: a hash of
//! the node id and a mask of slots) or, once the run has finished and all its facts are done, a
//! tombstone with the finish time. Entries are spread over shards by a hash of the uid; a flush
//! rewrites only the shards that changed, each as a whole: a file written beside the old one and
//! renamed over it (`file:DIR`), or a ConfigMap replaced under optimistic concurrency
//! (`configmap:NAMESPACE/NAME`). A crash leaves every shard either old or new, never torn.
//!
//! Tombstones are dropped past the retention; entries of running workflows only once the
//! workflow is gone and the retention has passed since their last change.

use crate::model::{Mark, Outcome, RunAttempt, node_hash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Shards when the checkpoint URI does not say: 10,000 running workflows of 50 nodes take about
/// 7 MB, so about 220 KB per ConfigMap, far below the 1 MiB object limit.
pub const DEFAULT_SHARDS: usize = 32;

/// A shard this large is logged: the API server refuses objects over 1 MiB.
const SHARD_WARN_BYTES: usize = 768 * 1024;

/// Stored shards as read: shard index and its entries.
type Shards = Vec<(usize, BTreeMap<String, String>)>;

/// Label on every checkpoint ConfigMap, valued with the checkpoint's name.
pub const CONFIGMAP_LABEL: &str = "kfp-event-bridge/checkpoint";

/// Where the checkpoint lives, from `--checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSpec {
    /// No checkpoint: a restart publishes again every fact within the retention.
    None,
    File {
        dir: PathBuf,
        shards: usize,
    },
    ConfigMap {
        namespace: String,
        name: String,
        shards: usize,
    },
}

impl CheckpointSpec {
    /// Parses `none`, `file:DIR[?shards=N]` or `configmap:NAMESPACE/NAME[?shards=N]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut shards = DEFAULT_SHARDS;
        let params =
            sink_core::uri::params(query).map_err(|e| format!("--checkpoint {text}: {e}"))?;
        for param in params {
            match param.key {
                "shards" => {
                    shards = param
                        .value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| format!("--checkpoint {text}: shards must be 1 to 256"))?;
                }
                other => return Err(format!("--checkpoint {text}: unknown parameter {other:?}")),
            }
        }
        if base == "none" {
            return Ok(Self::None);
        }
        if let Some(dir) = base.strip_prefix("file:").filter(|d| !d.is_empty()) {
            return Ok(Self::File {
                dir: PathBuf::from(dir),
                shards,
            });
        }
        if let Some(rest) = base.strip_prefix("configmap:") {
            if let Some((namespace, name)) = rest.split_once('/') {
                // Both are DNS labels: the namespace's name, and the value of the shards' label
                // (label values are at most 63 characters, alphanumeric at both ends).
                let valid = |s: &str| {
                    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
                    !s.is_empty()
                        && s.len() <= 63
                        && s.bytes().all(|b| alnum(b) || b == b'-')
                        && s.bytes().next().is_some_and(alnum)
                        && s.bytes().last().is_some_and(alnum)
                };
                if valid(namespace) && valid(name) {
                    return Ok(Self::ConfigMap {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        shards,
                    });
                }
            }
            return Err(format!(
                "--checkpoint {text}: want configmap:NAMESPACE/NAME, each a DNS label (lower-case \
                 letters, digits and '-', at most 63 characters: NAME is the shards' label value)"
            ));
        }
        Err(format!(
            "--checkpoint {text}: want file:DIR, configmap:NAMESPACE/NAME or none"
        ))
    }
}

/// What is done for one workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Done facts of a run not finished (or not all done); `touched` is the last change, in unix
    /// seconds.
    Active { touched: i64, marks: Vec<Mark> },
    /// Every fact of the finished run is done; `at` is when it finished.
    Finished { at: i64 },
}

impl Entry {
    fn encode(&self) -> String {
        match self {
            Entry::Active { touched, marks } => {
                let mut bytes = Vec::with_capacity(marks.len() * 10);
                for mark in marks {
                    bytes.extend_from_slice(&mark.node.to_be_bytes());
                    bytes.extend_from_slice(&mark.slots.to_be_bytes());
                }
                format!("a{touched}:{}", STANDARD_NO_PAD.encode(bytes))
            }
            Entry::Finished { at } => format!("f{at}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if let Some(at) = text.strip_prefix('f') {
            return Some(Entry::Finished {
                at: at.parse().ok()?,
            });
        }
        let (touched, marks) = text.strip_prefix('a')?.split_once(':')?;
        let bytes = STANDARD_NO_PAD.decode(marks).ok()?;
        if bytes.len() % 10 != 0 {
            return None;
        }
        let mut marks: Vec<Mark> = bytes
            .chunks_exact(10)
            .map(|c| Mark {
                node: u64::from_be_bytes(c[..8].try_into().unwrap_or_default()),
                slots: u16::from_be_bytes([c[8], c[9]]),
            })
            .collect();
        marks.sort_unstable();
        Some(Entry::Active {
            touched: touched.parse().ok()?,
            marks,
        })
    }

    /// Takes in what another copy knows (a conflicting writer's shard): the union, since a fact
    /// either copy records as done was done.
    fn merge(&mut self, other: Entry) {
        match (&mut *self, other) {
            (Entry::Finished { at }, Entry::Finished { at: other }) => *at = (*at).max(other),
            (Entry::Finished { .. }, Entry::Active { .. }) => {}
            (this @ Entry::Active { .. }, other @ Entry::Finished { .. }) => *this = other,
            (
                Entry::Active { touched, marks },
                Entry::Active {
                    touched: t,
                    marks: m,
                },
            ) => {
                *touched = (*touched).max(t);
                for mark in m {
                    add_mark(marks, mark);
                }
            }
        }
    }
}

/// One workflow's entry as a restart reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored<'a> {
    /// The run attempt `retries` finished at `at` and all its facts are done.
    Finished {
        retries: u32,
        at: i64,
        outcome: Option<Outcome>,
    },
    /// These facts of `attempt` are done.
    Active {
        attempt: RunAttempt,
        marks: &'a [Mark],
    },
}

/// An entry with the run attempt it is about. A retried run's entry follows its latest attempt:
/// the marks of that attempt, or the tombstone of the attempt that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    entry: Entry,
    /// For an active entry, the attempt its marks belong to; for a tombstone, `retries` of the
    /// attempt that ended.
    attempt: RunAttempt,
    /// How the tombstone's attempt ended (what the next attempt reports as the previous one).
    outcome: Option<Outcome>,
}

fn outcome_code(outcome: Option<Outcome>) -> char {
    match outcome {
        Some(Outcome::Succeeded) => 'S',
        Some(Outcome::Failed) => 'F',
        Some(Outcome::Error) => 'E',
        None => '-',
    }
}

fn outcome_of(code: &str) -> Option<Option<Outcome>> {
    Some(match code {
        "S" => Some(Outcome::Succeeded),
        "F" => Some(Outcome::Failed),
        "E" => Some(Outcome::Error),
        "-" => None,
        _ => return None,
    })
}

impl Stored {
    /// `Entry::encode`, then for a later attempt `;RETRIES:SINCE:PREVIOUS[:m]` (active; `m`:
    /// [`RunAttempt::marked`]) and for a
    /// tombstone `;RETRIES:OUTCOME`. Entries of a first attempt without an outcome read as before
    /// retries were recorded, and entries written before read as first attempts.
    fn encode(&self) -> String {
        let mut text = self.entry.encode();
        match self.entry {
            Entry::Active { .. } if self.attempt.retries > 0 || self.attempt.marked => {
                let since = self
                    .attempt
                    .since
                    .map_or_else(|| "-".to_owned(), |s| s.to_string());
                text.push_str(&format!(
                    ";{}:{since}:{}",
                    self.attempt.retries,
                    outcome_code(self.attempt.previous)
                ));
                if self.attempt.marked {
                    text.push_str(":m");
                }
            }
            Entry::Finished { .. } if self.attempt.retries > 0 || self.outcome.is_some() => {
                text.push_str(&format!(
                    ";{}:{}",
                    self.attempt.retries,
                    outcome_code(self.outcome)
                ));
            }
            _ => {}
        }
        text
    }

    fn decode(text: &str) -> Option<Self> {
        let (entry, attempt) = match text.split_once(';') {
            Some((entry, attempt)) => (entry, Some(attempt)),
            None => (text, None),
        };
        let mut stored = Stored {
            entry: Entry::decode(entry)?,
            attempt: RunAttempt::default(),
            outcome: None,
        };
        let Some(attempt) = attempt else {
            return Some(stored);
        };
        let mut parts = attempt.split(':');
        stored.attempt.retries = parts.next()?.parse().ok()?;
        match stored.entry {
            Entry::Active { .. } => {
                stored.attempt.since = match parts.next()? {
                    "-" => None,
                    since => Some(since.parse().ok()?),
                };
                stored.attempt.previous = outcome_of(parts.next()?)?;
                if let Some(mark) = parts.next() {
                    stored.attempt.marked = mark == "m";
                    if !stored.attempt.marked {
                        return None;
                    }
                }
            }
            Entry::Finished { .. } => stored.outcome = outcome_of(parts.next()?)?,
        }
        parts.next().is_none().then_some(stored)
    }

    /// Takes in another copy (a conflicting writer's): the later attempt wins; within one
    /// attempt, the union ([`Entry::merge`]).
    fn merge(&mut self, other: Stored) {
        match self.attempt.retries.cmp(&other.attempt.retries) {
            std::cmp::Ordering::Less => *self = other,
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal => {
                if matches!(other.entry, Entry::Finished { .. }) {
                    self.outcome = self.outcome.or(other.outcome);
                }
                self.entry.merge(other.entry);
            }
        }
    }
}

fn add_mark(marks: &mut Vec<Mark>, mark: Mark) {
    match marks.binary_search_by_key(&mark.node, |m| m.node) {
        Ok(at) => marks[at].slots |= mark.slots,
        Err(at) => marks.insert(at, mark),
    }
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    pub writes: u64,
    pub failures: u64,
    /// Bytes of the shards written (their encoded data).
    pub bytes: u64,
}

enum Store {
    None,
    File(PathBuf),
    ConfigMap {
        api: Box<Api<ConfigMap>>,
        name: String,
        /// `resourceVersion` of each shard's ConfigMap as last read or written.
        versions: HashMap<usize, String>,
    },
}

/// Encoded shards to write, by index.
type Batch = Vec<(usize, BTreeMap<String, String>)>;

/// What the writer task did with a batch.
#[derive(Default)]
struct WriteReport {
    /// Shards not written: dirty again.
    failed: Vec<usize>,
    error: Option<CheckpointError>,
    writes: u64,
    failures: u64,
    bytes: u64,
    /// Shards another writer had written in between, as read back (merged into what was
    /// written): memory takes them in too.
    theirs: Shards,
}

/// The writer task: batches go in, one at a time and in order (a shard's writes never overtake
/// each other), and a report comes back for each.
struct Writer {
    batches: tokio::sync::mpsc::UnboundedSender<Batch>,
    reports: tokio::sync::mpsc::UnboundedReceiver<WriteReport>,
}

/// The done-facts store: in memory, written to its store by a task of its own, so recording
/// never waits for a write.
pub struct Checkpoint {
    /// Per shard, its entries: a write touches only its shard's.
    entries: Vec<HashMap<Arc<str>, Stored>>,
    shards: usize,
    dirty: BTreeSet<usize>,
    /// Changes since the last write began.
    unflushed: usize,
    /// Changes in the write under way (`None`: no write is).
    writing: Option<usize>,
    /// `None` without a store (`--checkpoint none`).
    writer: Option<Writer>,
    stats: CheckpointStats,
}

/// Why the checkpoint store could not be opened, read or written; the cause kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or directory of a `file:` checkpoint.
    #[error("checkpoint {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API of a `configmap:` checkpoint.
    #[error("checkpoint {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("a configmap checkpoint needs a Kubernetes client")]
    NoClient,
    #[error("checkpoint shard {0}: conflicting writers")]
    Conflict(usize),
    /// The writer task stopped (the runtime is shutting down).
    #[error("checkpoint writer stopped")]
    WriterGone,
    #[error("checkpoint encode: {0}")]
    Encode(#[from] serde_json::Error),
    /// A blocking store task did not finish (it panicked or the runtime stopped).
    #[error("checkpoint {what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Checkpoint {
    /// Opens the store and loads what it holds.
    pub async fn open(
        spec: &CheckpointSpec,
        client: Option<&Client>,
    ) -> Result<Self, CheckpointError> {
        let (store, shards) = match spec {
            CheckpointSpec::None => (Store::None, 1),
            CheckpointSpec::File { dir, shards } => {
                std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
                    path: format!("directory {}", dir.display()),
                    source,
                })?;
                (Store::File(dir.clone()), *shards)
            }
            CheckpointSpec::ConfigMap {
                namespace,
                name,
                shards,
            } => {
                let client = client.ok_or(CheckpointError::NoClient)?;
                (
                    Store::ConfigMap {
                        api: Box::new(Api::namespaced(client.clone(), namespace)),
                        name: name.clone(),
                        versions: HashMap::new(),
                    },
                    *shards,
                )
            }
        };
        let mut store = store;
        let loaded = store.load().await?;
        let writer = (!matches!(store, Store::None)).then(|| {
            let (batches, mut batches_rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
            let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(batch) = batches_rx.recv().await {
                    let report = store.write(batch, shards).await;
                    if reports_tx.send(report).is_err() {
                        break;
                    }
                }
            });
            Writer { batches, reports }
        });
        let mut checkpoint = Self {
            entries: vec![HashMap::new(); shards],
            shards,
            dirty: BTreeSet::new(),
            unflushed: 0,
            writing: None,
            writer,
            stats: CheckpointStats::default(),
        };
        for (index, data) in loaded {
            checkpoint.take_in(index, data);
        }
        Ok(checkpoint)
    }

    fn shard_of(&self, uid: &str) -> usize {
        (node_hash(uid) % self.shards as u64) as usize
    }

    /// Merges a stored shard into memory; entries found in another shard than theirs (the shard
    /// count changed) make both shards dirty so the next flush moves them.
    fn take_in(&mut self, index: usize, data: BTreeMap<String, String>) {
        for (uid, value) in data {
            let Some(entry) = Stored::decode(&value) else {
                tracing::warn!(workflow_uid = %uid, "checkpoint entry unreadable; ignored");
                continue;
            };
            let home = self.shard_of(&uid);
            if home != index {
                self.dirty.insert(home);
                if index < self.shards {
                    self.dirty.insert(index);
                }
            }
            match self.entries[home].get_mut(uid.as_str()) {
                Some(known) => known.merge(entry),
                None => {
                    self.entries[home].insert(Arc::from(uid), entry);
                }
            }
        }
    }

    /// Every entry: what is done of each workflow (see [`Restored`]).
    pub fn entries(&self) -> impl Iterator<Item = (&str, Restored<'_>)> {
        self.entries.iter().flatten().map(|(uid, stored)| {
            let restored = match &stored.entry {
                Entry::Finished { at } => Restored::Finished {
                    retries: stored.attempt.retries,
                    at: *at,
                    outcome: stored.outcome,
                },
                Entry::Active { marks, .. } => Restored::Active {
                    attempt: stored.attempt,
                    marks,
                },
            };
            (&**uid, restored)
        })
    }

    /// Records one done fact of a run's first attempt.
    pub fn record(&mut self, uid: &str, mark: Mark, now: i64) {
        self.record_attempt(uid, mark, RunAttempt::default(), now);
    }

    /// Records one done fact of `attempt`. A fact of a later attempt than the entry's replaces
    /// it (the earlier attempt's marks are no longer needed: its nodes are told apart by time);
    /// one of an earlier attempt, or of an attempt already ended, changes nothing.
    pub fn record_attempt(&mut self, uid: &str, mark: Mark, attempt: RunAttempt, now: i64) {
        let shard = self.shard_of(uid);
        let fresh = Stored {
            entry: Entry::Active {
                touched: now,
                marks: vec![mark],
            },
            attempt,
            outcome: None,
        };
        match self.entries[shard].get_mut(uid) {
            Some(known) if known.attempt.retries > attempt.retries => return,
            Some(known) if known.attempt.retries < attempt.retries => *known = fresh,
            Some(Stored {
                entry: Entry::Finished { .. },
                ..
            }) => return,
            Some(Stored {
                entry: Entry::Active { touched, marks },
                ..
            }) => {
                *touched = now;
                add_mark(marks, mark);
            }
            None => {
                self.entries[shard].insert(Arc::from(uid), fresh);
            }
        }
        self.dirty.insert(shard);
        self.unflushed += 1;
    }

    /// Every fact of a finished run (never retried) is done: its entry shrinks to a tombstone.
    pub fn finish(&mut self, uid: &str, at: i64) {
        self.finish_attempt(uid, at, 0, None);
    }

    /// Every fact of attempt `retries` (counted from 0) of a run, which ended at `at` with
    /// `outcome`, is done: its entry shrinks to a tombstone, unless a later attempt is recorded.
    pub fn finish_attempt(&mut self, uid: &str, at: i64, retries: u32, outcome: Option<Outcome>) {
        let shard = self.shard_of(uid);
        if self.entries[shard]
            .get(uid)
            .is_some_and(|known| known.attempt.retries > retries)
        {
            return;
        }
        let stored = Stored {
            entry: Entry::Finished { at },
            attempt: RunAttempt {
                retries,
                ..RunAttempt::default()
            },
            outcome,
        };
        self.entries[shard].insert(Arc::from(uid), stored);
        self.dirty.insert(shard);
        self.unflushed += 1;
    }

    /// The run attempt an entry is about (a tombstone's: the attempt that ended).
    pub fn attempt(&self, uid: &str) -> Option<RunAttempt> {
        self.entries[self.shard_of(uid)].get(uid).map(|s| s.attempt)
    }

    /// Drops tombstones of runs finished before `before`, and entries of workflows that no longer
    /// exist (`alive` says no) unchanged since before it. Returns the uids dropped.
    pub fn prune(&mut self, before: i64, alive: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        for (shard, entries) in self.entries.iter_mut().enumerate() {
            let before_len = gone.len();
            entries.retain(|uid, stored| {
                let keep = match &stored.entry {
                    Entry::Finished { at } => *at >= before,
                    Entry::Active { touched, .. } => *touched >= before || alive(uid),
                };
                if !keep {
                    gone.push(Arc::clone(uid));
                }
                keep
            });
            if gone.len() > before_len {
                self.dirty.insert(shard);
            }
        }
        gone
    }

    pub fn entry(&self, uid: &str) -> Option<&Entry> {
        self.entries[self.shard_of(uid)].get(uid).map(|s| &s.entry)
    }

    pub fn len(&self) -> usize {
        self.entries.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(HashMap::is_empty)
    }

    pub fn stats(&self) -> &CheckpointStats {
        &self.stats
    }

    /// Changes recorded in memory and not yet being written.
    pub fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// Changes not durable yet: not yet written, or in the write under way.
    pub fn undurable(&self) -> usize {
        self.unflushed + self.writing.unwrap_or(0)
    }

    /// A write is under way.
    pub fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Begins writing every shard that changed (unless a write is under way: one at a time);
    /// the writer task does the work, recording goes on meanwhile. Returns whether a write is
    /// under way now. Without a store, everything is "written" at once.
    pub fn start_flush(&mut self) -> bool {
        if self.writing.is_some() {
            return true;
        }
        let Some(writer) = &self.writer else {
            self.dirty.clear();
            self.unflushed = 0;
            return false;
        };
        if self.dirty.is_empty() {
            return false;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let batch: Batch = dirty
            .iter()
            .map(|&shard| (shard, self.shard_data(shard)))
            .collect();
        if writer.batches.send(batch).is_err() {
            // The writer task is gone (the runtime is stopping): nothing is written.
            self.dirty = dirty;
            return false;
        }
        self.writing = Some(std::mem::take(&mut self.unflushed));
        true
    }

    /// Waits for the write under way and takes in how it went: a shard that failed is dirty
    /// again (and its changes count as not written), the error returned for the caller to log.
    /// Never resolves while no write is under way. Cancel-safe.
    pub async fn written(&mut self) -> Result<(), CheckpointError> {
        let Some(writer) = self.writer.as_mut().filter(|_| self.writing.is_some()) else {
            return std::future::pending().await;
        };
        let report = writer.reports.recv().await.unwrap_or_else(|| WriteReport {
            error: Some(CheckpointError::WriterGone),
            ..WriteReport::default()
        });
        let changes = self.writing.take().unwrap_or(0);
        self.stats.writes += report.writes;
        self.stats.failures += report.failures;
        self.stats.bytes += report.bytes;
        for (shard, theirs) in report.theirs {
            self.take_in(shard, theirs);
        }
        if report.error.is_some() {
            self.dirty.extend(report.failed);
            self.unflushed += changes;
        }
        report.error.map_or(Ok(()), Err)
    }

    /// Writes every shard that changed and waits for it (after the write under way, if any).
    pub async fn flush(&mut self) -> Result<(), CheckpointError> {
        if self.writing.is_some() {
            // What fails now is dirty again and written below.
            let _ = self.written().await;
        }
        if self.start_flush() {
            self.written().await
        } else {
            Ok(())
        }
    }

    fn shard_data(&self, shard: usize) -> BTreeMap<String, String> {
        let data: BTreeMap<String, String> = self.entries[shard]
            .iter()
            .map(|(uid, stored)| (uid.to_string(), stored.encode()))
            .collect();
        let size = data_size(&data);
        if size > SHARD_WARN_BYTES {
            tracing::warn!(
                shard,
                bytes = size,
                "checkpoint shard near the 1 MiB object limit; raise ?shards="
            );
        }
        data
    }
}

/// A shard's size as stored: keys, values and a little framing per entry.
fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len() + 6).sum()
}

/// Takes another writer's copy of `shard` into `ours` (encoded entries): the union, per
/// [`Stored::merge`], of the entries that belong to this shard.
fn merge_encoded(
    ours: &mut BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    shard: usize,
    shards: usize,
) {
    for (uid, value) in theirs {
        if (node_hash(uid) % shards as u64) as usize != shard {
            continue;
        }
        let Some(their) = Stored::decode(value) else {
            continue;
        };
        let merged = match ours.get(uid).and_then(|v| Stored::decode(v)) {
            Some(mut mine) => {
                mine.merge(their);
                mine
            }
            None => their,
        };
        ours.insert(uid.clone(), merged.encode());
    }
}

impl Store {
    async fn load(&mut self) -> Result<Shards, CheckpointError> {
        match self {
            Store::None => Ok(Vec::new()),
            Store::File(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || load_dir(&dir))
                    .await
                    .map_err(|source| CheckpointError::Task {
                        what: "load",
                        source,
                    })?
            }
            Store::ConfigMap {
                api,
                name,
                versions,
            } => {
                let selector = format!("{CONFIGMAP_LABEL}={name}");
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|source| CheckpointError::Kube {
                        what: format!("ConfigMaps {name}-*"),
                        source,
                    })?;
                let mut out = Vec::new();
                for cm in list.items {
                    let Some(index) = shard_index(cm.metadata.name.as_deref().unwrap_or(""), name)
                    else {
                        continue;
                    };
                    if let Some(rv) = cm.metadata.resource_version.clone() {
                        versions.insert(index, rv);
                    }
                    out.push((index, cm.data.unwrap_or_default()));
                }
                Ok(out)
            }
        }
    }

    /// Writes a batch of shards, each whole; reports what was written and what failed.
    async fn write(&mut self, batch: Batch, shards: usize) -> WriteReport {
        let mut report = WriteReport::default();
        let outcome = |report: &mut WriteReport, shard, bytes, result| match result {
            Ok(()) => {
                report.writes += 1;
                report.bytes += bytes as u64;
            }
            Err(err) => {
                report.failures += 1;
                report.failed.push(shard);
                report.error.get_or_insert(err);
            }
        };
        match self {
            Store::None => {}
            Store::File(dir) => {
                let dir = dir.clone();
                let shards_in: Vec<usize> = batch.iter().map(|(shard, _)| *shard).collect();
                let written = tokio::task::spawn_blocking(move || {
                    batch
                        .into_iter()
                        .map(|(shard, data)| {
                            (shard, data_size(&data), write_file(&dir, shard, &data))
                        })
                        .collect::<Vec<_>>()
                })
                .await;
                match written {
                    Ok(results) => {
                        for (shard, bytes, result) in results {
                            outcome(&mut report, shard, bytes, result);
                        }
                    }
                    Err(source) => {
                        report.failures += shards_in.len() as u64;
                        report.failed = shards_in;
                        report.error = Some(CheckpointError::Task {
                            what: "write",
                            source,
                        });
                    }
                }
            }
            Store::ConfigMap {
                api,
                name,
                versions,
            } => {
                for (shard, data) in batch {
                    let bytes = data_size(&data);
                    let result = write_configmap(
                        api,
                        name,
                        versions,
                        shard,
                        data,
                        shards,
                        &mut report.theirs,
                    )
                    .await;
                    outcome(&mut report, shard, bytes, result);
                }
            }
        }
        report
    }
}

/// Replaces a shard's ConfigMap under optimistic concurrency (creates it the first time). A
/// conflicting writer's copy is read, merged in and the write retried; the copy is kept in
/// `theirs` for memory to take in.
async fn write_configmap(
    api: &Api<ConfigMap>,
    name: &str,
    versions: &mut HashMap<usize, String>,
    shard: usize,
    mut data: BTreeMap<String, String>,
    shards: usize,
    theirs: &mut Shards,
) -> Result<(), CheckpointError> {
    let cm_name = shard_name(name, shard);
    for _ in 0..3 {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(cm_name.clone()),
                resource_version: versions.get(&shard).cloned(),
                labels: Some(BTreeMap::from([
                    (CONFIGMAP_LABEL.to_owned(), name.to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "kfp-event-bridge".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(std::mem::take(&mut data)),
            ..ConfigMap::default()
        };
        let result = if cm.metadata.resource_version.is_some() {
            api.replace(&cm_name, &PostParams::default(), &cm).await
        } else {
            api.create(&PostParams::default(), &cm).await
        };
        data = cm.data.take().unwrap_or_default();
        match result {
            Ok(written) => {
                if let Some(rv) = written.metadata.resource_version {
                    versions.insert(shard, rv);
                }
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                // Someone else wrote it (or it was deleted): read, merge, retry.
                versions.remove(&shard);
                match api.get_opt(&cm_name).await {
                    Ok(Some(current)) => {
                        if let Some(rv) = current.metadata.resource_version.clone() {
                            versions.insert(shard, rv);
                        }
                        let copy = current.data.unwrap_or_default();
                        merge_encoded(&mut data, &copy, shard, shards);
                        theirs.push((shard, copy));
                    }
                    Ok(None) => {}
                    Err(source) => {
                        return Err(CheckpointError::Kube {
                            what: cm_name,
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(CheckpointError::Kube {
                    what: cm_name,
                    source,
                });
            }
        }
    }
    Err(CheckpointError::Conflict(shard))
}

fn shard_name(name: &str, shard: usize) -> String {
    format!("{name}-{shard:02}")
}

fn shard_index(object_name: &str, name: &str) -> Option<usize> {
    object_name
        .strip_prefix(name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn shard_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:02}.json"))
}

fn load_dir(dir: &Path) -> Result<Shards, CheckpointError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(index) = file_name.to_str().and_then(|n| {
            n.strip_prefix("shard-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        }) else {
            continue;
        };
        let path = entry.path();
        let text = std::fs::read(&path).map_err(io_error(&path))?;
        // Files are replaced by rename, so a torn file means damage from outside: say so, go on
        // with the rest (the facts it held are published again, never lost).
        match serde_json::from_slice::<BTreeMap<String, String>>(&text) {
            Ok(data) => out.push((index, data)),
            Err(err) => tracing::error!(
                path = %path.display(),
                error = %err,
                "checkpoint shard unreadable; its facts will be published again"
            ),
        }
    }
    Ok(out)
}

/// Writes a shard crash-safely: a temporary file, synced, renamed over the old one, directory
/// synced.
fn write_file(
    dir: &Path,
    shard: usize,
    data: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let path = shard_file(dir, shard);
    let temp = dir.join(format!(".shard-{shard:02}.json.tmp"));
    let fail = io_error(&path);
    let bytes = serde_json::to_vec(data)?;
    let mut file = std::fs::File::create(&temp).map_err(&fail)?;
    file.write_all(&bytes).map_err(&fail)?;
    file.sync_all().map_err(&fail)?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(&fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(&fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        assert_eq!(
            CheckpointSpec::parse("file:/var/lib/kfp?shards=4"),
            Ok(CheckpointSpec::File {
                dir: "/var/lib/kfp".into(),
                shards: 4
            })
        );
        assert_eq!(
            CheckpointSpec::parse("configmap:kubeflow/kfp-event-bridge"),
            Ok(CheckpointSpec::ConfigMap {
                namespace: "kubeflow".into(),
                name: "kfp-event-bridge".into(),
                shards: DEFAULT_SHARDS
            })
        );
        assert_eq!(CheckpointSpec::parse("none"), Ok(CheckpointSpec::None));
        let longest = format!("configmap:kubeflow/{}", "a".repeat(63));
        assert!(CheckpointSpec::parse(&longest).is_ok());
        for bad in [
            "file:",
            "configmap:Kubeflow/x",
            "configmap:x",
            "s3://b",
            "file:/d?shards=0",
            "file:/d?x=1",
            // The name is the shards' label value: at most 63 characters, alphanumeric ends.
            &format!("configmap:kubeflow/{}", "a".repeat(64)),
            "configmap:kubeflow/-x",
            "configmap:kubeflow/x-",
        ] {
            let err = CheckpointSpec::parse(bad).expect_err(bad);
            assert!(err.contains("--checkpoint"), "{err}");
        }
    }

    /// A lifecycle warning's mark as checkpoints have held it since fixed bits (the bit of
    /// `ImagePull` is 0, so the slots are `4 << 0`), pinned byte for byte: what
    /// `kfp-v2-imagepull-terminated`'s warning is recorded as (the restore is proven in
    /// `pipeline::progress`).
    #[test]
    fn a_warning_mark_reads_back_as_written() {
        let written = "a0:gBemWe8/RFIABA";
        let stored = Stored::decode(written).expect("decodes");
        let Entry::Active { marks, .. } = &stored.entry else {
            panic!("active")
        };
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].slots, 4, "ImagePull's bit 0");
        assert_eq!(stored.encode(), written);
    }

    #[test]
    fn attempts_round_trip_and_entries_written_before_read_as_first_attempts() {
        let attempt = RunAttempt {
            retries: 2,
            since: Some(1_700_000_100),
            previous: Some(Outcome::Failed),
            marked: false,
        };
        let active = Stored {
            entry: Entry::Active {
                touched: 5,
                marks: vec![Mark { node: 9, slots: 3 }],
            },
            attempt,
            outcome: None,
        };
        assert_eq!(Stored::decode(&active.encode()), Some(active.clone()));
        let tomb = Stored {
            entry: Entry::Finished { at: 1_700_000_200 },
            attempt: RunAttempt {
                retries: 1,
                ..RunAttempt::default()
            },
            outcome: Some(Outcome::Succeeded),
        };
        assert_eq!(tomb.encode(), "f1700000200;1:S");
        assert_eq!(Stored::decode(&tomb.encode()), Some(tomb));
        // A first attempt's active entry is written exactly as before retries were recorded.
        let first = Stored {
            entry: Entry::Active {
                touched: 5,
                marks: vec![Mark { node: 9, slots: 3 }],
            },
            attempt: RunAttempt::default(),
            outcome: None,
        };
        assert_eq!(first.encode(), first.entry.encode());
        let legacy = Stored::decode("f50").expect("a tombstone written before");
        assert_eq!(legacy.attempt, RunAttempt::default());
        assert_eq!(legacy.outcome, None);
        for bad in [
            "f50;",
            "f50;x:S",
            "f50;1:Q",
            "f50;1:S:9",
            "a1:AAAAAAAAAAAAAA;2:x:F",
        ] {
            assert_eq!(Stored::decode(bad), None, "{bad}");
        }
        // A conflicting copy of a later attempt wins; of an earlier one, changes nothing.
        let mut merged = Stored::decode("f50;0:F").expect("tombstone");
        merged.merge(active.clone());
        assert_eq!(merged, active);
        merged.merge(Stored::decode("f50;0:F").expect("tombstone"));
        assert_eq!(merged, active);
    }

    #[tokio::test]
    async fn a_retry_replaces_the_tombstone_and_a_late_done_of_the_attempt_before_is_ignored() {
        let mut checkpoint = Checkpoint::open(&CheckpointSpec::None, None)
            .await
            .expect("open");
        let second = RunAttempt {
            retries: 1,
            since: Some(100),
            previous: Some(Outcome::Failed),
            marked: false,
        };
        checkpoint.finish_attempt("uid", 100, 0, Some(Outcome::Failed));
        checkpoint.record_attempt("uid", Mark { node: 1, slots: 1 }, second, 200);
        assert_eq!(checkpoint.attempt("uid"), Some(second));
        // The first attempt's facts arrive late: nothing changes.
        checkpoint.record_attempt(
            "uid",
            Mark { node: 2, slots: 2 },
            RunAttempt::default(),
            201,
        );
        checkpoint.finish_attempt("uid", 100, 0, Some(Outcome::Failed));
        assert_eq!(
            checkpoint.entry("uid"),
            Some(&Entry::Active {
                touched: 200,
                marks: vec![Mark { node: 1, slots: 1 }]
            })
        );
        checkpoint.finish_attempt("uid", 300, 1, Some(Outcome::Succeeded));
        assert_eq!(checkpoint.entry("uid"), Some(&Entry::Finished { at: 300 }));
        assert_eq!(checkpoint.attempt("uid").map(|a| a.retries), Some(1));
    }

    #[test]
    fn entries_round_trip_and_merge_as_a_union() {
        let a = Entry::Active {
            touched: 5,
            marks: vec![
                Mark { node: 1, slots: 1 },
                Mark {
                    node: u64::MAX,
                    slots: 0x8003,
                },
            ],
        };
        assert_eq!(Entry::decode(&a.encode()), Some(a.clone()));
        let f = Entry::Finished { at: 1_700_000_000 };
        assert_eq!(Entry::decode(&f.encode()), Some(f.clone()));
        for bad in ["", "a", "a1:!!", "a1:AAA", "fX", "x1"] {
            assert_eq!(Entry::decode(bad), None, "{bad}");
        }
        let mut merged = a.clone();
        merged.merge(Entry::Active {
            touched: 9,
            marks: vec![Mark { node: 1, slots: 2 }, Mark { node: 7, slots: 4 }],
        });
        assert_eq!(
            merged,
            Entry::Active {
                touched: 9,
                marks: vec![
                    Mark { node: 1, slots: 3 },
                    Mark { node: 7, slots: 4 },
                    Mark {
                        node: u64::MAX,
                        slots: 0x8003
                    }
                ]
            }
        );
        merged.merge(f.clone());
        assert_eq!(merged, f);
    }

    #[tokio::test]
    async fn a_file_checkpoint_survives_reopening_and_prunes() {
        let dir = std::env::temp_dir().join(format!("kfp-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = CheckpointSpec::File {
            dir: dir.clone(),
            shards: 4,
        };
        let mut checkpoint = Checkpoint::open(&spec, None).await.expect("open");
        let mark = Mark { node: 42, slots: 1 };
        for n in 0..100 {
            checkpoint.record(&format!("uid-{n}"), mark, 100);
        }
        checkpoint.finish("uid-0", 50);
        checkpoint.flush().await.expect("flush");
        assert!(checkpoint.stats().writes <= 4, "one write per dirty shard");
        let mut reopened = Checkpoint::open(&spec, None).await.expect("reopen");
        assert_eq!(reopened.len(), 100);
        assert_eq!(reopened.entry("uid-0"), Some(&Entry::Finished { at: 50 }));
        // A tombstone past retention goes; an active entry goes only once its workflow is gone.
        let gone = reopened.prune(60, |uid| uid != "uid-1");
        assert_eq!(gone.len(), 1);
        let gone = reopened.prune(200, |uid| uid != "uid-1");
        assert_eq!(&*gone[0], "uid-1");
        // Reopened with another shard count, everything is still found.
        let spec8 = CheckpointSpec::File {
            dir: dir.clone(),
            shards: 8,
        };
        let again = Checkpoint::open(&spec8, None)
            .await
            .expect("reopen with 8 shards");
        assert_eq!(again.len(), 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Recording goes on while a write is under way: what changes meanwhile is counted apart and
    /// written by the next write; a failed write leaves its shards dirty and its changes
    /// unwritten, and the next write that succeeds puts everything on disk.
    #[tokio::test]
    async fn recording_goes_on_during_a_write_and_a_failed_write_is_redone() {
        let dir = std::env::temp_dir().join(format!("kfp-ckpt-bg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = CheckpointSpec::File {
            dir: dir.clone(),
            shards: 4,
        };
        let mut checkpoint = Checkpoint::open(&spec, None).await.expect("open");
        let mark = Mark { node: 7, slots: 1 };
        for n in 0..50 {
            checkpoint.record(&format!("uid-{n}"), mark, 100);
        }
        assert!(checkpoint.start_flush(), "a write begins");
        assert!(checkpoint.is_writing());
        assert!(
            checkpoint.start_flush(),
            "one at a time: still the same write"
        );
        for n in 50..80 {
            checkpoint.record(&format!("uid-{n}"), mark, 100);
        }
        assert_eq!((checkpoint.unflushed(), checkpoint.undurable()), (30, 80));
        checkpoint.written().await.expect("written");
        assert_eq!((checkpoint.unflushed(), checkpoint.undurable()), (30, 30));
        assert!(!checkpoint.is_writing());
        assert_eq!(
            Checkpoint::open(&spec, None).await.expect("reopen").len(),
            50,
            "the first write holds what was recorded before it began"
        );

        // The directory replaced by a file: the write fails, nothing is lost from memory.
        std::fs::remove_dir_all(&dir).expect("remove");
        std::fs::write(&dir, b"not a directory").expect("file");
        assert!(checkpoint.start_flush());
        assert!(checkpoint.written().await.is_err());
        assert_eq!(checkpoint.undurable(), 30, "still not written");
        assert!(checkpoint.stats().failures > 0);
        std::fs::remove_file(&dir).expect("remove file");
        std::fs::create_dir_all(&dir).expect("dir");
        checkpoint.flush().await.expect("flush");
        assert_eq!(checkpoint.undurable(), 0);
        let reopened = Checkpoint::open(&spec, None).await.expect("reopen");
        // Every shard the failed write touched was written again (the first write's shards are
        // gone with the directory unless they were touched since).
        for n in 50..80 {
            assert!(reopened.entry(&format!("uid-{n}")).is_some(), "uid-{n}");
        }
        assert!(checkpoint.stats().bytes > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
