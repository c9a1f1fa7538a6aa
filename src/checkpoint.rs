//! The checkpoint: which facts are done — delivered to, or dead-lettered by, every sink they
//! were routed to — so that after a restart (including `kill -9`) the re-list publishes only
//! what is not.
//!
//! Per workflow uid it keeps either the [`Mark`]s of its done facts (10 bytes per node: a hash of
//! the node id and a mask of slots) or, once the run has finished and all its facts are done, a
//! tombstone with the finish time. Entries are spread over shards by a hash of the uid; a flush
//! encodes only the entries that changed and hands them to a writer task, which writes them as
//! one journal slot when they fit; a compaction, running beside those writes once half the slots
//! are held, rewrites the shards changed since the last one and frees the slots it covers:
//! files written beside the old ones and renamed over them (`file:DIR`), or
//! ConfigMaps replaced under optimistic concurrency (`configmap:NAMESPACE/NAME`; a shard is split
//! into parts by content, each under 256 KiB, and only changed parts are rewritten). A crash
//! leaves every object either old or new, never torn; a restart reads all of them as a union.
//!
//! Tombstones are dropped past the retention; entries of running workflows only once the
//! workflow is gone and the retention has passed since their last change.

use crate::model::{Mark, Outcome, RunAttempt, node_hash};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Shards when the checkpoint URI does not say: 10,000 running workflows of 50 nodes take about
/// 7 MB, so about 220 KB per shard. A ConfigMap shard larger than [`PART_BYTES`] is split into
/// parts, so no object nears the API server's 1 MiB limit whatever the count.
pub const DEFAULT_SHARDS: usize = 32;

/// Stored objects as read: shard index (`None`: a journal slot) and entries.
type Shards = Vec<(Option<usize>, BTreeMap<String, String>)>;

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
    /// Bytes of the objects written (their encoded data).
    pub bytes: u64,
}

/// Where the writer task puts shards.
enum Store {
    None,
    File(PathBuf),
    ConfigMap {
        api: Box<Api<ConfigMap>>,
        name: String,
        /// Per shard, its ConfigMaps as last read or written.
        objects: HashMap<usize, Objects>,
        /// `resourceVersion` of each journal slot's ConfigMap.
        slots: BTreeMap<usize, String>,
    },
}

/// The ConfigMaps of one shard: part 0 is `NAME-NN`, part P ≥ 1 `NAME-NN-P`. A shard is split
/// into as many parts (a power of two) as keep each under [`PART_BYTES`], by a hash of the uid.
#[derive(Default)]
struct Objects {
    /// `resourceVersion` of each part's ConfigMap (present: the object exists).
    versions: BTreeMap<usize, String>,
    /// Parts as last written (0: never written by this process).
    parts: usize,
    /// Parts whose last write failed: written again with the shard's next write.
    unwritten: BTreeSet<usize>,
    /// Parts known to be empty (emptied when the shard shrank, or found so).
    empty: BTreeSet<usize>,
}

/// A ConfigMap part is kept under this many bytes of data: the API server refuses a ConfigMap
/// over 1 MiB, and a change rewrites only the part holding it.
const PART_BYTES: usize = 256 * 1024;

/// At most this many parts per shard (names an RBAC rule can list): 8 MiB a shard, 256 MiB for
/// the default 32 shards — far beyond what 50,000 running workflows take (about 37 MB).
const MAX_PARTS: usize = 8;

/// Journal slots: a write whose changed entries fit one object goes to a free slot (`NAME-jNN`,
/// `journal-NN.json`) instead of rewriting every shard it touches. Once half the slots hold
/// changes, the shards changed since the last compaction are rewritten by a compaction that runs
/// beside the journal writes (which go on in the other slots); the slots it covers are free once
/// it has written every shard. Only when every slot is held, or the changes are too many for one
/// slot, does a write wait for a compaction. A restart reads shards and slots as one union.
const JOURNAL_SLOTS: usize = 32;

/// A compaction writes this many shards at once: an API server serves concurrent writes, and a
/// compaction of the default 32 shards then takes 8 round trips, not 32.
const COMPACTION_WRITES: usize = 4;

/// What changed in one shard since its last write began: uid → its encoded entry (`None`:
/// dropped).
struct ShardChange {
    shard: usize,
    changes: Vec<(String, Option<String>)>,
}

/// What the writer task did with a batch.
#[derive(Default)]
struct WriteReport {
    /// Shards not (wholly) written: dirty again.
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
    batches: tokio::sync::mpsc::UnboundedSender<Vec<ShardChange>>,
    reports: tokio::sync::mpsc::UnboundedReceiver<WriteReport>,
}

/// A shard's entries, encoded as they are written: shared by the writer task and a compaction
/// under way, and locked only to change, copy or merge them (never across a write).
type Image = std::sync::Mutex<BTreeMap<String, String>>;

/// An image, locked (a panic while it was held leaves entries that are still whole strings).
fn lock(image: &Image) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    image.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer task's own state: the store and, per shard, its entries encoded as they are
/// written. Only changed entries cross from the recording side (encoded there, a few bytes each);
/// whole shards are serialized by the compaction, off the publish path.
struct Disk {
    store: Store,
    images: Arc<[Image]>,
    /// Shards to be written whole by the next compaction (entries moved between shards, or
    /// found in a journal slot at start: the slots are overwritten next).
    whole: BTreeSet<usize>,
    /// Per shard, the uids changed since the last compaction began (in journal slots only, or
    /// not written at all yet).
    pending: BTreeMap<usize, BTreeSet<String>>,
    /// Journal slots holding changes that no finished compaction has written into the shards:
    /// none is overwritten before one has.
    held: BTreeSet<usize>,
    /// The next write compacts before anything else: a journal write failed (what it held is
    /// only in the images), or a compaction did.
    compact_next: bool,
    /// The compaction running beside the journal writes, with the slots it frees.
    compaction: Option<(BTreeSet<usize>, tokio::task::JoinHandle<Compacted>)>,
    /// What a compaction that ended beside the journal writes did, for the next report.
    carried: WriteReport,
}

/// A shard a compaction writes: the uids changed since the last one (which of its parts to
/// rewrite), or all of it.
struct Due {
    shard: usize,
    uids: BTreeSet<String>,
    whole: bool,
}

/// How a compaction went, with the shards' ConfigMaps handed back.
struct Compacted {
    due: Vec<Due>,
    objects: HashMap<usize, Objects>,
    report: WriteReport,
}

/// Where a compaction writes the shards: what of the [`Store`] a task of its own needs.
enum Shelf {
    None,
    File(PathBuf),
    ConfigMap {
        api: Box<Api<ConfigMap>>,
        name: String,
    },
}

/// The done-facts store: in memory, written to its store by a task of its own, so recording
/// never waits for a write.
pub struct Checkpoint {
    /// Per shard, its entries: a write touches only its shard's.
    entries: Vec<HashMap<Arc<str>, Stored>>,
    shards: usize,
    /// Per shard, the uids changed since its last write began (empty: written again as it is).
    dirty: BTreeMap<usize, BTreeSet<Arc<str>>>,
    /// Changes since the last write began.
    unflushed: usize,
    /// Changes in the write under way (`None`: no write is).
    writing: Option<usize>,
    /// `None` without a store (`--checkpoint none`).
    writer: Option<Writer>,
    stats: CheckpointStats,
}

/// Backoff of the ConfigMap checkpoint's load at start while the API server is unavailable.
const LOAD_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(200);
const LOAD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// An API error that waiting may cure: the server (or a proxy in front of it) unavailable,
/// overloaded or timing out, or the connection failing; not a refusal of the request itself.
fn transient_api_error(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || matches!(status.code, 408 | 429),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
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
        let (mut store, shards) = match spec {
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
                        objects: HashMap::new(),
                        slots: BTreeMap::new(),
                    },
                    *shards,
                )
            }
        };
        let loaded = store.load().await?;
        let mut checkpoint = Self {
            entries: vec![HashMap::new(); shards],
            shards,
            dirty: BTreeMap::new(),
            unflushed: 0,
            writing: None,
            writer: None,
            stats: CheckpointStats::default(),
        };
        let mut journaled = BTreeSet::new();
        for (index, data) in loaded {
            if index.is_none() {
                journaled.extend(data.keys().map(|uid| checkpoint.shard_of(uid)));
            }
            checkpoint.take_in(index, data);
        }
        if !matches!(store, Store::None) {
            journaled.extend(checkpoint.dirty.keys().copied());
            let disk = Disk {
                store,
                images: (0..shards)
                    .map(|s| Image::new(checkpoint.encoded(s)))
                    .collect(),
                whole: journaled,
                pending: BTreeMap::new(),
                held: BTreeSet::new(),
                compact_next: false,
                compaction: None,
                carried: WriteReport::default(),
            };
            checkpoint.writer = Some(disk.spawn());
        }
        Ok(checkpoint)
    }

    fn shard_of(&self, uid: &str) -> usize {
        (node_hash(uid) % self.shards as u64) as usize
    }

    /// Notes a changed entry for the next write.
    fn touch(&mut self, shard: usize, uid: &str) {
        let key = match self.entries[shard].get_key_value(uid) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(uid),
        };
        self.dirty.entry(shard).or_default().insert(key);
        self.unflushed += 1;
    }

    /// Merges a stored shard (or journal slot: `None`) into memory; entries found in another
    /// shard than theirs (the shard count changed) make both shards dirty so the next flush
    /// moves them.
    fn take_in(&mut self, index: Option<usize>, data: BTreeMap<String, String>) {
        for (uid, value) in data {
            let Some(entry) = Stored::decode(&value) else {
                tracing::warn!(workflow_uid = %uid, "checkpoint entry unreadable; ignored");
                continue;
            };
            let home = self.shard_of(&uid);
            if let Some(index) = index.filter(|&index| index != home) {
                self.dirty.entry(home).or_default();
                if index < self.shards {
                    self.dirty.entry(index).or_default();
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
        self.touch(shard, uid);
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
        match self.entries[shard].get_mut(uid) {
            Some(known) => *known = stored,
            None => {
                self.entries[shard].insert(Arc::from(uid), stored);
            }
        }
        self.touch(shard, uid);
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
                self.dirty
                    .entry(shard)
                    .or_default()
                    .extend(gone[before_len..].iter().cloned());
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
    /// the writer task does the work, recording goes on meanwhile. Only the changed entries are
    /// encoded here. Returns whether a write is under way now. Without a store, everything is
    /// "written" at once.
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
        let batch: Vec<ShardChange> = dirty
            .iter()
            .map(|(&shard, uids)| ShardChange {
                shard,
                changes: uids
                    .iter()
                    .map(|uid| {
                        let value = self.entries[shard].get(&**uid).map(Stored::encode);
                        (uid.to_string(), value)
                    })
                    .collect(),
            })
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
            // The writer keeps what it has not written; the shard only needs to be sent again.
            for shard in report.failed {
                self.dirty.entry(shard).or_default();
            }
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

    /// Writes every shard that changed, then waits for a compaction running beside the journal
    /// to end as well (its failure is logged by the writer, not returned): after a graceful stop
    /// the shards hold what the slots do, as far as that compaction got.
    pub async fn settle(&mut self) -> Result<(), CheckpointError> {
        self.flush().await?;
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        if writer.batches.send(Vec::new()).is_err() {
            return Ok(());
        }
        self.writing = Some(0);
        self.written().await
    }

    /// A shard's entries, encoded.
    fn encoded(&self, shard: usize) -> BTreeMap<String, String> {
        self.entries[shard]
            .iter()
            .map(|(uid, stored)| (uid.to_string(), stored.encode()))
            .collect()
    }
}

/// A shard's size as stored: keys, values and a little framing per entry.
fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len() + 6).sum()
}

/// Parts a shard of `bytes` is written as: a power of two, each part under [`PART_BYTES`], at
/// most [`MAX_PARTS`].
fn parts_for(bytes: usize) -> usize {
    bytes
        .div_ceil(PART_BYTES)
        .max(1)
        .next_power_of_two()
        .min(MAX_PARTS)
}

/// Every ConfigMap a `configmap:NAMESPACE/NAME` checkpoint of `shards` may write, in order: per
/// shard its parts (`NAME-NN`, `NAME-NN-1` … `NAME-NN-7`), then the journal slots (`NAME-j00` …):
/// what an RBAC rule limited to names must list.
pub fn object_names(name: &str, shards: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(shards * MAX_PARTS + JOURNAL_SLOTS);
    for shard in 0..shards {
        for part in 0..MAX_PARTS {
            names.push(part_name(name, shard, part));
        }
    }
    names.extend((0..JOURNAL_SLOTS).map(|slot| journal_name(name, slot)));
    names
}

/// The part of a shard of `parts` an entry is written in (independent of its shard).
fn part_of(uid: &str, shards: usize, parts: usize) -> usize {
    ((node_hash(uid) / shards as u64) % parts as u64) as usize
}

/// Takes another writer's copy of `shard` into `ours` (encoded entries): the union, per
/// [`Stored::merge`], of the entries that belong to this shard. Returns the uids that changed.
fn merge_encoded(
    ours: &mut BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    shard: usize,
    shards: usize,
) -> Vec<String> {
    let mut changed = Vec::new();
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
        let encoded = merged.encode();
        if ours.get(uid) != Some(&encoded) {
            ours.insert(uid.clone(), encoded);
            changed.push(uid.clone());
        }
    }
    changed
}

impl Disk {
    fn spawn(mut self) -> Writer {
        let (batches, mut batches_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<ShardChange>>();
        let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(batch) = batches_rx.recv().await {
                let report = self.write(batch).await;
                if reports_tx.send(report).is_err() {
                    break;
                }
            }
        });
        Writer { batches, reports }
    }

    /// Takes a batch of changes into the shards' images and makes them durable: as one journal
    /// slot holding the changed entries when they fit and a slot is free (a compaction starting
    /// beside the journal once half the slots are held), else by a compaction that includes them,
    /// waited for. Reports what was written (a compaction beside included once it has ended) and
    /// what of this batch failed.
    async fn write(&mut self, batch: Vec<ShardChange>) -> WriteReport {
        if batch.is_empty() {
            // Nothing new ([`Checkpoint::settle`]): the compaction beside, waited for.
            let mut report = std::mem::take(&mut self.carried);
            let beside = self.reap().await;
            add_counts(&mut report, beside);
            return report;
        }
        let mut delta = BTreeMap::new();
        let mut touched = Vec::with_capacity(batch.len());
        for ShardChange { shard, changes } in batch {
            let mut image = lock(&self.images[shard]);
            let uids = self.pending.entry(shard).or_default();
            for (uid, value) in changes {
                match value {
                    Some(value) => {
                        delta.insert(uid.clone(), value.clone());
                        image.insert(uid.clone(), value);
                    }
                    // A dropped entry leaves the shard with the next compaction (until then a
                    // restart reads it again and drops it again).
                    None => {
                        image.remove(&uid);
                    }
                }
                uids.insert(uid);
            }
            touched.push(shard);
        }
        let mut report = std::mem::take(&mut self.carried);
        if self
            .compaction
            .as_ref()
            .is_some_and(|(_, task)| task.is_finished())
        {
            let beside = self.reap().await;
            add_counts(&mut report, beside);
        }
        let compact = !self.whole.is_empty() || self.compact_next || data_size(&delta) > PART_BYTES;
        if !compact && delta.is_empty() {
            return report;
        }
        if !compact && self.free_slot().is_none() {
            // Every slot is held: the compaction beside frees those it covers.
            let beside = self.reap().await;
            add_counts(&mut report, beside);
        }
        let Some(slot) = self.free_slot().filter(|_| !compact) else {
            // Compacted now, this batch included, after the compaction beside (if any).
            let beside = self.reap().await;
            add_counts(&mut report, beside);
            let (covers, task) = self.start_compaction();
            let now = self.absorb(covers, task.await);
            if now.failed.is_empty() && now.error.is_none() {
                self.compact_next = false;
            }
            // The batch failed where this compaction did.
            add_counts(&mut report, now);
            return report;
        };
        let bytes = data_size(&delta) as u64;
        let result = match &mut self.store {
            Store::None => Ok(()),
            Store::File(dir) => {
                let dir = dir.clone();
                let name = journal_file(slot);
                blocking_write(move || {
                    let bytes = serde_json::to_vec(&delta)?;
                    write_file(&dir, &name, &bytes)
                })
                .await
            }
            Store::ConfigMap {
                api, name, slots, ..
            } => {
                let target = Target {
                    api,
                    checkpoint: name,
                    object: journal_name(name, slot),
                };
                target
                    .put_journal(
                        slots,
                        slot,
                        delta,
                        &self.images,
                        &mut self.pending,
                        &mut report,
                    )
                    .await
            }
        };
        match result {
            Ok(()) => {
                self.held.insert(slot);
                report.writes += 1;
                report.bytes += bytes;
            }
            Err(err) => {
                // Not durable: the next write compacts (what this one held is in the images).
                self.compact_next = true;
                report.failures += 1;
                report.failed = touched;
                report.error = Some(err);
            }
        }
        if self.compaction.is_none() && !self.compact_next && self.held.len() >= JOURNAL_SLOTS / 2 {
            self.compaction = Some(self.start_compaction());
        }
        report
    }

    /// The lowest journal slot no compaction still needs.
    fn free_slot(&self) -> Option<usize> {
        (0..JOURNAL_SLOTS).find(|slot| !self.held.contains(slot))
    }

    /// Starts compacting every shard changed since the last compaction began (and each to be
    /// written whole) on a task of its own; it covers the slots held now.
    fn start_compaction(&mut self) -> (BTreeSet<usize>, tokio::task::JoinHandle<Compacted>) {
        let mut due: BTreeMap<usize, Due> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(shard, uids)| {
                let whole = false;
                (shard, Due { shard, uids, whole })
            })
            .collect();
        for shard in std::mem::take(&mut self.whole) {
            due.entry(shard)
                .or_insert_with(|| Due {
                    shard,
                    uids: BTreeSet::new(),
                    whole: true,
                })
                .whole = true;
        }
        let (shelf, objects) = match &mut self.store {
            Store::None => (Shelf::None, HashMap::new()),
            Store::File(dir) => (Shelf::File(dir.clone()), HashMap::new()),
            Store::ConfigMap {
                api, name, objects, ..
            } => (
                Shelf::ConfigMap {
                    api: api.clone(),
                    name: name.clone(),
                },
                std::mem::take(objects),
            ),
        };
        let images = Arc::clone(&self.images);
        let due = due.into_values().collect();
        let task = tokio::spawn(compact(shelf, images, due, objects));
        (self.held.clone(), task)
    }

    /// Waits for the compaction beside the journal (if any) and takes it in; its failure is
    /// logged here (what it covered is still in the slots it leaves held), not a batch's.
    async fn reap(&mut self) -> WriteReport {
        let Some((covers, task)) = self.compaction.take() else {
            return WriteReport::default();
        };
        let mut report = self.absorb(covers, task.await);
        if let Some(err) = report.error.take() {
            tracing::warn!(
                error = %err,
                "checkpoint compaction failed; its journal slots are kept and the next write compacts again"
            );
        }
        report.failed.clear();
        report
    }

    /// Takes in how a compaction went: the shards' ConfigMaps back; a shard it did not write is
    /// due again (its uids pending, whole if it was) and the next write compacts; the slots it
    /// covered are free once it wrote every shard.
    fn absorb(
        &mut self,
        covers: BTreeSet<usize>,
        done: Result<Compacted, tokio::task::JoinError>,
    ) -> WriteReport {
        match done {
            Ok(Compacted {
                due,
                objects,
                report,
            }) => {
                if let Store::ConfigMap { objects: ours, .. } = &mut self.store {
                    *ours = objects;
                }
                for Due { shard, uids, whole } in due {
                    if report.failed.contains(&shard) {
                        self.pending.entry(shard).or_default().extend(uids);
                        if whole {
                            self.whole.insert(shard);
                        }
                    }
                }
                if report.failed.is_empty() {
                    self.held.retain(|slot| !covers.contains(slot));
                } else {
                    self.compact_next = true;
                }
                report
            }
            Err(source) => {
                // Which shards it wrote is unknown (and so are their ConfigMaps' versions: the
                // next write reads them back on conflict): every shard is written whole next.
                self.whole.extend(0..self.images.len());
                self.compact_next = true;
                WriteReport {
                    failures: 1,
                    failed: (0..self.images.len()).collect(),
                    error: Some(CheckpointError::Task {
                        what: "compaction",
                        source,
                    }),
                    ..WriteReport::default()
                }
            }
        }
    }
}

/// Adds what another write did to a report: counts, another writer's entries, and its failure.
fn add_counts(report: &mut WriteReport, other: WriteReport) {
    report.writes += other.writes;
    report.failures += other.failures;
    report.bytes += other.bytes;
    report.theirs.extend(other.theirs);
    report.failed.extend(other.failed);
    if report.error.is_none() {
        report.error = other.error;
    }
}

/// Writes every due shard whole (a file) or its changed parts (ConfigMaps), [`COMPACTION_WRITES`]
/// shards at a time, reading each from the images as it goes: what changed since it began is in
/// the journal too.
async fn compact(
    shelf: Shelf,
    images: Arc<[Image]>,
    due: Vec<Due>,
    mut objects: HashMap<usize, Objects>,
) -> Compacted {
    let shards = images.len();
    // Owned per write (a borrow of `due` in each future does not make a `Send` task).
    let jobs: Vec<(usize, BTreeSet<String>, bool)> = due
        .iter()
        .map(|d| (d.shard, d.uids.clone(), d.whole))
        .collect();
    let writes = jobs.into_iter().map(|(shard, uids, whole)| {
        let mut cms = objects.remove(&shard).unwrap_or_default();
        let (shelf, images) = (&shelf, &images);
        async move {
            let mut report = WriteReport::default();
            let result = match shelf {
                Shelf::None => Ok(()),
                Shelf::File(dir) => {
                    let image = lock(&images[shard]).clone();
                    let dir = dir.clone();
                    blocking_write(move || {
                        let bytes = serde_json::to_vec(&image)?;
                        write_file(&dir, &shard_file(shard), &bytes)?;
                        Ok(bytes.len() as u64)
                    })
                    .await
                    .map(|size| {
                        report.writes += 1;
                        report.bytes += size;
                    })
                }
                Shelf::ConfigMap { api, name } => {
                    let part = Part {
                        api,
                        name,
                        shard,
                        shards,
                    };
                    part.write_shard(&images[shard], &mut cms, &uids, whole, &mut report)
                        .await
                }
            };
            if let Err(err) = result {
                report.failures += 1;
                report.failed.push(shard);
                report.error.get_or_insert(err);
            }
            (shard, cms, report)
        }
    });
    let written: Vec<(usize, Objects, WriteReport)> = futures_util::stream::iter(writes)
        .buffer_unordered(COMPACTION_WRITES)
        .collect()
        .await;
    let mut report = WriteReport::default();
    for (shard, cms, one) in written {
        objects.insert(shard, cms);
        add_counts(&mut report, one);
    }
    Compacted {
        due,
        objects,
        report,
    }
}

/// Runs a store write on the blocking pool.
async fn blocking_write<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|source| CheckpointError::Task {
            what: "write",
            source,
        })?
}

/// One shard of a ConfigMap checkpoint being written.
struct Part<'a> {
    api: &'a Api<ConfigMap>,
    name: &'a str,
    shard: usize,
    shards: usize,
}

impl Part<'_> {
    /// Writes the parts of the shard that hold a changed uid (all of them when the part count
    /// changed, `whole`, or after a failure), highest part first, then deletes parts no longer
    /// used: an entry moving between parts is written to its new part before it leaves the old
    /// one, so a crash in between leaves it in both (a union when read), never in neither.
    async fn write_shard(
        &self,
        image: &Image,
        cms: &mut Objects,
        uids: &BTreeSet<String>,
        whole: bool,
        report: &mut WriteReport,
    ) -> Result<(), CheckpointError> {
        let size = data_size(&lock(image));
        let parts = parts_for(size);
        if size > MAX_PARTS * PART_BYTES {
            tracing::warn!(
                shard = self.shard,
                bytes = size,
                "checkpoint shard past what its parts are meant to hold (a ConfigMap takes at most 1 MiB); raise ?shards="
            );
        }
        let mut pending: BTreeSet<usize> = if whole || parts != cms.parts {
            (0..parts).collect()
        } else {
            let mut changed: BTreeSet<usize> = uids
                .iter()
                .map(|uid| part_of(uid, self.shards, parts))
                .collect();
            changed.extend(cms.unwritten.iter().copied().filter(|&p| p < parts));
            changed
        };
        cms.unwritten.extend(pending.iter().copied());
        cms.parts = parts;
        let mut conflicts = 0;
        while let Some(part) = pending.pop_last() {
            let data: BTreeMap<String, String> = lock(image)
                .iter()
                .filter(|(uid, _)| part_of(uid, self.shards, parts) == part)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bytes = data_size(&data) as u64;
            cms.empty.remove(&part);
            let target = Target {
                api: self.api,
                checkpoint: self.name,
                object: part_name(self.name, self.shard, part),
            };
            match target.put(&mut cms.versions, part, data).await? {
                None => {
                    cms.unwritten.remove(&part);
                    report.writes += 1;
                    report.bytes += bytes;
                }
                Some(theirs) => {
                    // Another writer wrote this part in between: merge its copy and write the
                    // part (and any other part its entries belong to) again.
                    conflicts += 1;
                    if conflicts > 3 {
                        return Err(CheckpointError::Conflict(self.shard));
                    }
                    let changed = merge_encoded(&mut lock(image), &theirs, self.shard, self.shards);
                    for uid in changed {
                        pending.insert(part_of(&uid, self.shards, parts));
                    }
                    pending.insert(part);
                    report.theirs.push((Some(self.shard), theirs));
                }
            }
        }
        // Parts no longer used are emptied (not deleted: the same verbs as every other write).
        let stale: Vec<usize> = cms
            .versions
            .range(parts..)
            .map(|(&p, _)| p)
            .filter(|p| !cms.empty.contains(p))
            .collect();
        for part in stale {
            let target = Target {
                api: self.api,
                checkpoint: self.name,
                object: part_name(self.name, self.shard, part),
            };
            // A conflicting copy is simply replaced: its entries belong to parts written above
            // (another writer's are in `theirs` of those).
            for _ in 0..3 {
                if target
                    .put(&mut cms.versions, part, BTreeMap::new())
                    .await?
                    .is_none()
                {
                    cms.empty.insert(part);
                    report.writes += 1;
                    break;
                }
            }
        }
        Ok(())
    }
}

/// One ConfigMap of a checkpoint.
struct Target<'a> {
    api: &'a Api<ConfigMap>,
    checkpoint: &'a str,
    object: String,
}

impl Target<'_> {
    /// Writes a journal slot. Another writer's copy (a deposed leader's) is merged into it, into
    /// the images and into what the next compaction writes, then the slot is written again.
    async fn put_journal(
        &self,
        versions: &mut BTreeMap<usize, String>,
        slot: usize,
        mut delta: BTreeMap<String, String>,
        images: &[Image],
        pending: &mut BTreeMap<usize, BTreeSet<String>>,
        report: &mut WriteReport,
    ) -> Result<(), CheckpointError> {
        let shards = images.len();
        for _ in 0..3 {
            let Some(theirs) = self.put(versions, slot, delta.clone()).await? else {
                return Ok(());
            };
            for (shard, image) in images.iter().enumerate() {
                let mut image = lock(image);
                for uid in merge_encoded(&mut image, &theirs, shard, shards) {
                    if let Some(value) = image.get(&uid) {
                        delta.insert(uid.clone(), value.clone());
                    }
                    pending.entry(shard).or_default().insert(uid);
                }
            }
            report.theirs.push((None, theirs));
        }
        Err(CheckpointError::Conflict(slot))
    }

    /// Replaces the ConfigMap under optimistic concurrency (creates it the first time), keeping
    /// its `resourceVersion` in `versions[key]`. Returns the stored copy when another writer
    /// changed it in between (409), or it was deleted (404: an empty copy), for the caller to
    /// merge and retry.
    async fn put(
        &self,
        versions: &mut BTreeMap<usize, String>,
        key: usize,
        data: BTreeMap<String, String>,
    ) -> Result<Option<BTreeMap<String, String>>, CheckpointError> {
        let object = &self.object;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(object.clone()),
                resource_version: versions.get(&key).cloned(),
                labels: Some(BTreeMap::from([
                    (CONFIGMAP_LABEL.to_owned(), self.checkpoint.to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "kfp-event-bridge".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let result = if cm.metadata.resource_version.is_some() {
            self.api.replace(object, &PostParams::default(), &cm).await
        } else {
            self.api.create(&PostParams::default(), &cm).await
        };
        let fail = |source| CheckpointError::Kube {
            what: object.clone(),
            source,
        };
        match result {
            Ok(written) => {
                if let Some(rv) = written.metadata.resource_version {
                    versions.insert(key, rv);
                }
                Ok(None)
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                versions.remove(&key);
                let current = self.api.get_opt(object).await.map_err(fail)?;
                let Some(current) = current else {
                    return Ok(Some(BTreeMap::new()));
                };
                if let Some(rv) = current.metadata.resource_version {
                    versions.insert(key, rv);
                }
                Ok(Some(current.data.unwrap_or_default()))
            }
            Err(source) => Err(fail(source)),
        }
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
                objects,
                slots,
            } => {
                let selector = format!("{CONFIGMAP_LABEL}={name}");
                // An API server that is unavailable for a while (a restart, an upgrade, a
                // load balancer's 502) is waited for, as the watches wait; a refusal (403: the
                // Role lacks `list`) ends the start at once with the reason.
                let mut delay = LOAD_RETRY_INITIAL;
                let list = loop {
                    match api.list(&ListParams::default().labels(&selector)).await {
                        Ok(list) => break list,
                        Err(source) if transient_api_error(&source) => {
                            tracing::warn!(
                                error = %crate::telemetry::one_line(&source.to_string(), 300),
                                retry_in_ms = delay.as_millis() as u64,
                                "checkpoint cannot be loaded yet: the API server is unavailable; retrying"
                            );
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(LOAD_RETRY_MAX);
                        }
                        Err(source) => {
                            return Err(CheckpointError::Kube {
                                what: format!("ConfigMaps {name}-*"),
                                source,
                            });
                        }
                    }
                };
                let mut out = Vec::new();
                for cm in list.items {
                    let object_name = cm.metadata.name.as_deref().unwrap_or("");
                    let rv = cm.metadata.resource_version.clone();
                    let index = match object_kind(object_name, name) {
                        Some(ObjectKind::Shard(index, part)) => {
                            let cms = objects.entry(index).or_default();
                            if let Some(rv) = rv {
                                cms.versions.insert(part, rv);
                            }
                            if cm.data.as_ref().is_none_or(BTreeMap::is_empty) {
                                cms.empty.insert(part);
                            }
                            Some(index)
                        }
                        Some(ObjectKind::Journal(slot)) => {
                            if let Some(rv) = rv {
                                slots.insert(slot, rv);
                            }
                            None
                        }
                        None => continue,
                    };
                    out.push((index, cm.data.unwrap_or_default()));
                }
                Ok(out)
            }
        }
    }
}

fn part_name(name: &str, shard: usize, part: usize) -> String {
    match part {
        0 => format!("{name}-{shard:02}"),
        _ => format!("{name}-{shard:02}-{part}"),
    }
}

fn journal_name(name: &str, slot: usize) -> String {
    format!("{name}-j{slot:02}")
}

/// What a stored object of a checkpoint is, by its name.
#[derive(Debug, PartialEq, Eq)]
enum ObjectKind {
    /// Shard and part (`NAME-NN` is part 0, `NAME-NN-P` part P; files `shard-NN.json`).
    Shard(usize, usize),
    /// A journal slot (`NAME-jNN`, `journal-NN.json`).
    Journal(usize),
}

/// Shard and part of a checkpoint ConfigMap's name, or its journal slot.
fn object_kind(object_name: &str, name: &str) -> Option<ObjectKind> {
    let rest = object_name.strip_prefix(name)?.strip_prefix('-')?;
    if let Some(slot) = rest.strip_prefix('j') {
        return Some(ObjectKind::Journal(slot.parse().ok()?));
    }
    match rest.split_once('-') {
        Some((shard, part)) => Some(ObjectKind::Shard(shard.parse().ok()?, part.parse().ok()?)),
        None => Some(ObjectKind::Shard(rest.parse().ok()?, 0)),
    }
}

fn shard_file(shard: usize) -> String {
    format!("shard-{shard:02}.json")
}

fn journal_file(slot: usize) -> String {
    format!("journal-{slot:02}.json")
}

fn load_dir(dir: &Path) -> Result<Shards, CheckpointError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let number = |prefix: &str| -> Option<usize> {
            name.strip_prefix(prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()
        };
        let index = match (number("shard-"), number("journal-")) {
            (Some(index), _) => Some(index),
            (None, Some(_)) => None,
            (None, None) => continue,
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

/// Writes a file crash-safely: a temporary file, synced, renamed over the old one, directory
/// synced.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let fail = io_error(&path);
    let mut file = std::fs::File::create(&temp).map_err(&fail)?;
    file.write_all(bytes).map_err(&fail)?;
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

    /// ConfigMap names: `NAME-NN` is part 0 of shard NN (as before shards had parts), `NAME-NN-P`
    /// part P; a shard is split into a power of two of parts, each under `PART_BYTES`.
    #[test]
    fn part_names_and_counts() {
        assert_eq!(object_kind("big-03", "big"), Some(ObjectKind::Shard(3, 0)));
        assert_eq!(
            object_kind("big-03-2", "big"),
            Some(ObjectKind::Shard(3, 2))
        );
        assert_eq!(object_kind("big-j07", "big"), Some(ObjectKind::Journal(7)));
        for bad in [
            "big",
            "big-",
            "big-x",
            "big-03-x",
            "bigger-03",
            "big-03-2-1",
            "big-j",
        ] {
            assert_eq!(object_kind(bad, "big"), None, "{bad}");
        }
        assert_eq!(parts_for(0), 1);
        assert_eq!(parts_for(PART_BYTES), 1);
        assert_eq!(parts_for(PART_BYTES + 1), 2);
        assert_eq!(parts_for(3 * PART_BYTES), 4);
        // A part's entries go to part P or P + N when N parts become 2N.
        for n in 0..200 {
            let uid = format!("uid-{n}");
            assert_eq!(part_of(&uid, 32, 4) % 2, part_of(&uid, 32, 2));
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

    /// A small batch is one journal slot, not a write per touched shard; the slots are used in
    /// turn and, once half are, a compaction beside the journal writes the shards changed since
    /// and frees the slots it covered. A restart reads shards and slots as one union, and its
    /// first write compacts before any slot is overwritten — what only a slot held is never lost.
    #[tokio::test]
    async fn small_batches_go_to_the_journal_and_are_compacted_into_the_shards() {
        let dir = std::env::temp_dir().join(format!("kfp-ckpt-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = CheckpointSpec::File {
            dir: dir.clone(),
            shards: 4,
        };
        let files = |prefix: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .expect("dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            names
        };
        let mark = |node| Mark { node, slots: 1 };
        let mut checkpoint = Checkpoint::open(&spec, None).await.expect("open");
        for n in 0..40 {
            checkpoint.record(&format!("uid-{n}"), mark(1), 100);
        }
        checkpoint.flush().await.expect("flush");
        assert_eq!(
            checkpoint.stats().writes,
            1,
            "40 uids over 4 shards: one write"
        );
        assert_eq!(files("journal-"), ["journal-00.json"]);
        assert!(files("shard-").is_empty());
        drop(checkpoint);

        // Restarted: the journal is read; the first write compacts, then slots are used again.
        let mut checkpoint = Checkpoint::open(&spec, None).await.expect("reopen");
        assert_eq!(checkpoint.len(), 40);
        checkpoint.record("uid-40", mark(1), 100);
        checkpoint.flush().await.expect("flush");
        assert_eq!(
            files("shard-").len(),
            4,
            "compacted: every shard the journal touched"
        );
        let half = JOURNAL_SLOTS / 2;
        for round in 0..half {
            let before = checkpoint.stats().writes;
            checkpoint.record(&format!("uid-{round}"), mark(2 + round as u64), 100);
            if round == half - 1 {
                checkpoint.finish("uid-39", 200);
            }
            checkpoint.flush().await.expect("flush");
            assert_eq!(
                checkpoint.stats().writes - before,
                1,
                "round {round}: one slot"
            );
        }
        assert_eq!(files("journal-").len(), half);
        // Half the slots held: a compaction of the shards changed since (uid-0 … uid-7's and
        // uid-39's) runs beside the journal; `settle` waits for it.
        let before = checkpoint.stats().writes;
        checkpoint.settle().await.expect("settle");
        let compaction = checkpoint.stats().writes - before;
        assert!((2..=4).contains(&compaction), "{compaction} shard writes");
        // The slots it covered are free again: the next write takes the first.
        checkpoint.record("uid-0", mark(50), 100);
        checkpoint.flush().await.expect("flush");
        assert_eq!(files("journal-").len(), half, "slot 0 written again");
        // Reading only the shards (the slots removed) finds every change the compaction
        // covered.
        for slot in files("journal-") {
            std::fs::remove_file(dir.join(slot)).expect("remove");
        }
        let shards_only = Checkpoint::open(&spec, None).await.expect("reopen");
        assert_eq!(shards_only.len(), 41);
        assert_eq!(
            shards_only.entry("uid-39"),
            Some(&Entry::Finished { at: 200 })
        );
        assert!(matches!(
            shards_only.entry("uid-0"),
            Some(Entry::Active { marks, .. }) if marks.len() == 2
        ));
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
