//! Progress: the facts handed to the lanes and not yet done, per run. A done fact (every sink
//! it was routed to delivered or dead-lettered it) is recorded in the checkpoint; a run
//! attempt's last done fact after its end makes the run a tombstone in the checkpoint and in the
//! deriver. And the reverse at start: what the checkpoint says is done, the deriver derives no
//! more ([`restore`]).

use crate::checkpoint::{Checkpoint, Restored};
use crate::derive::Deriver;
use crate::model::{Mark, Outcome, RunAttempt};
use std::collections::HashMap;
use std::sync::Arc;

/// Tells the deriver what the checkpoint says is done, so a re-list derives only the rest.
pub fn restore(checkpoint: &Checkpoint, deriver: &mut Deriver) {
    for (uid, entry) in checkpoint.entries() {
        match entry {
            Restored::Finished {
                retries,
                at,
                outcome,
            } => deriver.restore_finished(uid, retries, Some(at), outcome),
            Restored::Active { attempt, marks } => {
                deriver.restore_attempt(uid, attempt);
                for mark in marks {
                    deriver.mark_done(uid, *mark);
                }
            }
        }
    }
}

/// The facts handed to delivery and not yet done, per run: turns completion tokens into
/// checkpoint records, and a run's last done fact after its end into a tombstone.
#[derive(Default)]
pub struct Progress {
    next: u64,
    pending: HashMap<u64, Pending>,
    runs: HashMap<Arc<str>, RunProgress>,
}

struct Pending {
    uid: Arc<str>,
    mark: Mark,
    attempt: RunAttempt,
    /// The run attempt's terminal fact: when it finished, and how.
    run_end: Option<(i64, Option<Outcome>)>,
}

#[derive(Default)]
struct RunProgress {
    in_flight: usize,
    /// The latest attempt handed to delivery (its `retries`).
    latest: u32,
    /// The end of that attempt, once its terminal fact is done.
    ended: Option<(i64, Option<Outcome>)>,
}

impl Progress {
    /// Registers a fact about to be sent; returns its completion token. `run_end`: the fact ends
    /// its run attempt, at that time with that outcome.
    pub fn add(
        &mut self,
        uid: &str,
        mark: Mark,
        attempt: RunAttempt,
        run_end: Option<(i64, Option<Outcome>)>,
    ) -> u64 {
        self.next += 1;
        let uid: Arc<str> = match self.runs.get_key_value(uid) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::from(uid),
        };
        let run = self.runs.entry(Arc::clone(&uid)).or_default();
        run.in_flight += 1;
        if attempt.retries > run.latest {
            // A retry: the earlier attempt's end no longer closes the run.
            run.latest = attempt.retries;
            run.ended = None;
        }
        self.pending.insert(
            self.next,
            Pending {
                uid,
                mark,
                attempt,
                run_end,
            },
        );
        self.next
    }

    /// A fact is done: recorded in the checkpoint; if it completes a finished run attempt (and
    /// no later one is in flight), the run becomes a tombstone in the checkpoint and in the
    /// deriver.
    pub fn done(
        &mut self,
        token: u64,
        checkpoint: &mut Checkpoint,
        deriver: &mut Deriver,
        now: i64,
    ) {
        let Some(fact) = self.pending.remove(&token) else {
            return;
        };
        checkpoint.record_attempt(&fact.uid, fact.mark, fact.attempt, now);
        let Some(run) = self.runs.get_mut(&fact.uid) else {
            return;
        };
        run.in_flight -= 1;
        if fact.run_end.is_some() && fact.attempt.retries == run.latest {
            run.ended = fact.run_end;
        }
        if run.in_flight == 0 {
            if let Some((at, outcome)) = run.ended {
                checkpoint.finish_attempt(&fact.uid, at, run.latest, outcome);
                deriver.finish(&fact.uid, run.latest);
            }
            self.runs.remove(&fact.uid);
        }
    }

    /// Facts sent and not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointSpec;
    use std::collections::BTreeSet;

    /// A warning recorded done, read back after a restart, is not published again (its
    /// category's bit is fixed: `model::LifecycleCategory`).
    #[tokio::test]
    async fn a_checkpointed_warning_is_not_published_again() {
        use crate::derive::DeriveConfig;
        use crate::model::FactKind;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/recordings/kfp-v2-imagepull-terminated.jsonl"
        );
        let input = std::fs::read(path).expect("recording");
        let facts = |deriver: &mut Deriver| {
            let mut all = Vec::new();
            for line in input.split(|b| *b == b'\n') {
                if let Ok(Some(observed)) = crate::source::recording::decode(line) {
                    all.extend(deriver.observe(&observed));
                }
            }
            all
        };
        let all = facts(&mut Deriver::new(DeriveConfig::default()));
        let warning = all
            .iter()
            .find(|f| f.kind == FactKind::TaskWarning)
            .expect("an image pull warning");
        assert_eq!(warning.mark().slots, 4, "ImagePull's bit 0");
        let mut checkpoint = Checkpoint::open(&CheckpointSpec::None, None)
            .await
            .expect("open");
        checkpoint.record(&warning.run.uid, warning.mark(), 0);
        let mut deriver = Deriver::new(DeriveConfig::default());
        restore(&checkpoint, &mut deriver);
        let again = facts(&mut deriver);
        assert!(!again.iter().any(|f| f.kind == FactKind::TaskWarning));
        assert!(again.iter().any(|f| f.kind == FactKind::RunFailed));
    }

    #[tokio::test]
    async fn progress_tombstones_only_the_latest_attempt() {
        let mut checkpoint = Checkpoint::open(&CheckpointSpec::None, None)
            .await
            .expect("open");
        let mut deriver = Deriver::new(crate::derive::DeriveConfig::default());
        let mut progress = Progress::default();
        let second = RunAttempt {
            retries: 1,
            since: Some(100),
            previous: Some(Outcome::Failed),
            marked: false,
        };
        let mark = Mark { node: 1, slots: 2 };
        // The first attempt's end and the second's start are in flight together.
        let end = progress.add(
            "uid",
            mark,
            RunAttempt::default(),
            Some((100, Some(Outcome::Failed))),
        );
        let start = progress.add("uid", Mark { node: 2, slots: 1 }, second, None);
        progress.done(end, &mut checkpoint, &mut deriver, 150);
        progress.done(start, &mut checkpoint, &mut deriver, 151);
        assert!(
            matches!(
                checkpoint.entry("uid"),
                Some(crate::checkpoint::Entry::Active { .. })
            ),
            "the second attempt is under way: no tombstone"
        );
        assert_eq!(checkpoint.attempt("uid"), Some(second));
        let end = progress.add("uid", mark, second, Some((300, Some(Outcome::Succeeded))));
        progress.done(end, &mut checkpoint, &mut deriver, 301);
        assert_eq!(
            checkpoint.entry("uid"),
            Some(&crate::checkpoint::Entry::Finished { at: 300 })
        );
    }

    /// The facts one deriver gives for `lines`, all delivered (recorded done at once).
    fn observe_all(
        lines: &[&[u8]],
        deriver: &mut Deriver,
        checkpoint: &mut Checkpoint,
        progress: &mut Progress,
        lost: usize,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        for line in lines {
            let Some(observed) = crate::source::recording::decode(line).expect("recording line")
            else {
                continue;
            };
            for fact in deriver.observe(&observed) {
                ids.push(crate::encode::fact_id(&fact));
                let run_end = fact.closes_run().then(|| {
                    let at = fact.time.map_or(0, |t| t.timestamp());
                    (at, Outcome::of_phase(&fact.run.phase))
                });
                tokens.push(progress.add(&fact.run.uid, fact.mark(), fact.run.attempt, run_end));
            }
        }
        // The last `lost` facts were in flight at the crash: published, never recorded done.
        let keep = tokens.len().saturating_sub(lost);
        for token in tokens.drain(..keep) {
            progress.done(token, checkpoint, deriver, 1_000);
        }
        ids
    }

    /// A crash after any line of a retried run, with 0 or 2 facts in flight, then a restart that
    /// re-lists (the last state seen again) and sees every later one; and a crash just after an
    /// attempt ended (its facts all recorded), back only after the retry was under way or over
    /// (a re-list shows the latest state): every fact of every attempt out, a fact repeated only
    /// when it was in flight, none under another attempt.
    #[tokio::test]
    async fn a_restart_after_any_line_of_a_retried_run_loses_nothing() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/recordings/retries");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("retry recordings")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 6);
        let mut downtimes = 0;
        for file in files {
            let text = std::fs::read(&file).expect("recording");
            let lines: Vec<&[u8]> = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            let config = crate::derive::DeriveConfig::default();
            let mut checkpoint = Checkpoint::open(&CheckpointSpec::None, None)
                .await
                .expect("open");
            let mut deriver = Deriver::new(config.clone());
            let all = observe_all(
                &lines,
                &mut deriver,
                &mut checkpoint,
                &mut Progress::default(),
                0,
            );
            let want: BTreeSet<String> = all.iter().cloned().collect();
            assert_eq!(want.len(), all.len(), "{}: an id twice", file.display());
            let object =
                |l: &[u8]| serde_json::from_slice::<serde_json::Value>(l).unwrap_or_default();
            let is_workflow = |l: &[u8]| object(l)["object"]["kind"] == "Workflow";
            let ended = |l: &[u8]| {
                let phase = object(l)["object"]["status"]["phase"].clone();
                is_workflow(l) && ["Succeeded", "Failed", "Error"].iter().any(|p| phase == *p)
            };
            let mut cases = Vec::new();
            for crash in 1..=lines.len() {
                cases.push((crash, 0, 0));
                cases.push((crash, 2, 0));
                if ended(lines[crash - 1]) {
                    // Down from just after an end until any later line up to the next end.
                    let next_end = (crash + 1..=lines.len())
                        .find(|&l| ended(lines[l - 1]))
                        .unwrap_or(lines.len());
                    cases.extend((1..=next_end - crash).map(|down| (crash, 0, down)));
                }
            }
            for (crash, lost, down) in cases {
                let mut checkpoint = Checkpoint::open(&CheckpointSpec::None, None)
                    .await
                    .expect("open");
                let mut deriver = Deriver::new(config.clone());
                let mut ids = observe_all(
                    &lines[..crash],
                    &mut deriver,
                    &mut checkpoint,
                    &mut Progress::default(),
                    lost,
                );
                let mut restarted = Deriver::new(config.clone());
                restore(&checkpoint, &mut restarted);
                // Back after `down` more lines: the re-list shows the latest state by then.
                let back = crash + down;
                downtimes += usize::from(down > 0);
                let relist = lines[..back]
                    .iter()
                    .rposition(|l| is_workflow(l))
                    .unwrap_or(0);
                ids.extend(observe_all(
                    &lines[relist..],
                    &mut restarted,
                    &mut checkpoint,
                    &mut Progress::default(),
                    0,
                ));
                let got: BTreeSet<String> = ids.iter().cloned().collect();
                let name = format!(
                    "{}: crash after line {crash}, {lost} in flight, back {down} lines later",
                    file.display()
                );
                assert_eq!(got, want, "{name}");
                assert!(
                    ids.len() - got.len() <= lost,
                    "{name}: {} repeats",
                    ids.len() - got.len()
                );
            }
        }
        assert!(downtimes > 20, "{downtimes} downtimes tried");
    }
}
