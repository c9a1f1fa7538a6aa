//! Presence: which workflows the watches show to exist, what a re-list implies (workflows gone
//! while a watch was away), when a workflow that only its Events told of counts as deleted
//! before the bridge saw it, and what the retention forgets. The live pipeline's domain logic
//! between the watches and the deriver, apart from the event loop.

use crate::checkpoint::Checkpoint;
use crate::derive::Deriver;
use crate::model::Fact;
use crate::source::recording::{Change, Observed};
use chrono::Utc;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// How long Event facts of a workflow the Workflow watch has not shown are held before the
/// workflow counts as gone (deleted before the bridge saw it) and its Events speak for it.
pub const UNSEEN_GRACE: Duration = Duration::from_secs(10);

/// What the watches have shown to exist, per watch.
pub struct Presence {
    /// Per watch: does it watch Workflows (the Event watches show no workflow)?
    workflows: Vec<bool>,
    alive: Vec<HashSet<String>>,
    /// Per watch, while it lists: the workflows the list showed so far.
    listing: Vec<Option<HashSet<String>>>,
    /// Per watch: it delivered its first list.
    synced: Vec<bool>,
    /// Per watch: it failed or re-lists, until it delivers again. While a Workflow watch is
    /// down the Event watch can run ahead of it by any time, so nothing counts as unseen then.
    down: Vec<bool>,
    /// Deleted workflows, forgotten by the deriver once the retention has passed.
    deleted: VecDeque<(i64, String)>,
    /// Workflows with held Event facts that no Workflow watch shows, since when.
    unseen: HashMap<String, tokio::time::Instant>,
}

impl Presence {
    /// For watches of which `workflows[i]` says whether watch `i` watches Workflows.
    pub fn new(workflows: Vec<bool>) -> Self {
        let n = workflows.len();
        Self {
            workflows,
            alive: vec![HashSet::new(); n],
            listing: vec![None; n],
            synced: vec![false; n],
            down: vec![false; n],
            deleted: VecDeque::new(),
            unseen: HashMap::new(),
        }
    }

    pub fn is_alive(&self, uid: &str) -> bool {
        self.alive.iter().any(|a| a.contains(uid))
    }

    /// Watch `i` delivered its first list.
    pub fn synced(&self, i: usize) -> bool {
        self.synced[i]
    }

    /// Watch `i` is synced and not replaying a list: what it delivers happens now.
    pub fn current(&self, i: usize) -> bool {
        self.synced[i] && self.listing[i].is_none()
    }

    /// Every Workflow watch is synced and up: a workflow none shows is not just not listed yet.
    pub fn workflows_known(&self) -> bool {
        (0..self.workflows.len()).all(|i| !self.workflows[i] || (self.synced[i] && !self.down[i]))
    }

    /// Watch `i` starts a (re-)list.
    pub fn listing(&mut self, i: usize) {
        self.went_down(i);
        if self.workflows[i] {
            self.listing[i] = Some(HashSet::new());
        }
    }

    /// Watch `i` finished its list: the workflows gone while it was away have their Events
    /// speak for them now. True the first time (the watch is synced).
    pub fn listed(&mut self, i: usize, deriver: &mut Deriver) -> (Vec<Fact>, bool) {
        let mut facts = Vec::new();
        if let Some(listed) = self.listing[i].take() {
            for uid in self.alive[i].difference(&listed) {
                facts.extend(deriver.gone(uid));
            }
            self.alive[i] = listed;
        }
        self.down[i] = false;
        (facts, !std::mem::replace(&mut self.synced[i], true))
    }

    /// Watch `i` failed and retries.
    pub fn failed(&mut self, i: usize) {
        self.went_down(i);
    }

    /// Watch `i` failed or re-lists: if it watches Workflows, the unseen timers start over once
    /// it is back.
    fn went_down(&mut self, i: usize) {
        self.down[i] = true;
        if self.workflows[i] {
            self.unseen.clear();
        }
    }

    /// Notes which workflows exist from what watch `i` delivered, and derives the facts it
    /// brings: a deleted workflow's final status first, then what only its Events said.
    pub fn observe(&mut self, i: usize, observed: &Observed, deriver: &mut Deriver) -> Vec<Fact> {
        self.down[i] = false;
        if let Observed::Workflow(change, wf) = observed {
            let uid = wf.metadata.uid.clone();
            if *change == Change::Deleted {
                self.alive[i].remove(&uid);
                self.deleted
                    .push_back((Utc::now().timestamp(), uid.clone()));
                let mut facts = deriver.observe(observed);
                facts.extend(deriver.gone(&uid));
                return facts;
            }
            if let Some(listing) = &mut self.listing[i] {
                listing.insert(uid.clone());
            }
            self.alive[i].insert(uid);
        }
        deriver.observe(observed)
    }

    /// Workflows whose Events arrived but which no Workflow watch has shown for a while were
    /// deleted before the bridge saw them: their held Event facts come out.
    pub fn unseen_gone(&mut self, deriver: &mut Deriver) -> Vec<Fact> {
        let now = tokio::time::Instant::now();
        let holding = deriver.holding();
        self.unseen.retain(|uid, _| holding.contains(uid));
        let mut facts = Vec::new();
        for uid in holding {
            if self.is_alive(&uid) {
                self.unseen.remove(&uid);
                continue;
            }
            let since = *self.unseen.entry(uid.clone()).or_insert(now);
            if now.duration_since(since) >= UNSEEN_GRACE {
                self.unseen.remove(&uid);
                facts.extend(deriver.gone(&uid));
            }
        }
        facts
    }

    /// Applies the retention: history before it is not published, and what finished or was
    /// deleted before it is forgotten (the checkpoint's entries and the deriver's state).
    pub fn apply_retention(
        &mut self,
        checkpoint: &mut Checkpoint,
        deriver: &mut Deriver,
        retention: Duration,
    ) {
        let horizon = Utc::now() - retention;
        deriver.set_history_before(Some(horizon));
        let before = horizon.timestamp();
        for uid in checkpoint.prune(before, |uid| self.is_alive(uid)) {
            deriver.forget(&uid);
        }
        while self.deleted.front().is_some_and(|(at, _)| *at < before) {
            if let Some((_, uid)) = self.deleted.pop_front()
                && !self.is_alive(&uid)
            {
                deriver.forget(&uid);
            }
        }
    }
}
