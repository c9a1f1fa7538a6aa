//! `replay`: reads a recording line by line, with bounded memory per line, and turns it into
//! CloudEvents through the same derivation and encoding as the live watches.

use super::recording::{self, MAX_LINE_BYTES};
use crate::derive::Deriver;
use crate::encode::{self, EncodeConfig};
use crate::metrics::Metrics;
use crate::model::Origin;
use cloudevents::Event;
use std::io::BufRead;

/// Bad lines reported one by one before the rest are only counted.
const REPORTED_BAD_LINES: u64 = 100;

/// What a replay read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub lines: u64,
    pub bad_lines: u64,
    pub events: u64,
}

/// Reads one line into `buf` (without the newline), never holding more than `MAX_LINE_BYTES + 1`
/// bytes of it: a longer line is consumed and reported as too long. `Ok(false)` at end of input.
pub fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let room = MAX_LINE_BYTES + 1 - buf.len();
            buf.extend_from_slice(&chunk[..take.min(room)]);
            too_long = buf.len() > MAX_LINE_BYTES;
        }
        input.consume(if done { take + 1 } else { take });
        if done {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(any)
}

/// Feeds every line of `input` through `deriver` and the encoder, handing each batch of events
/// (one watch line's worth) to `emit`. Bad lines are reported with their number and skipped.
pub fn replay(
    mut input: impl BufRead,
    deriver: &mut Deriver,
    config: &EncodeConfig,
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
        let facts = deriver.observe(&observed);
        // A run its status shows closed derives nothing more: its state shrinks to the uid, as
        // it does live once its facts are delivered (a recording of thousands of runs otherwise
        // keeps them all). Not on an Event's word: the status, with the task facts, may follow.
        for fact in facts
            .iter()
            .filter(|f| f.closes_run() && f.origin == Origin::Status)
        {
            deriver.finish(&fact.run.uid, fact.run.attempt.retries);
        }
        for (level, notice) in deriver.take_notices() {
            crate::derive::log_notice(level, &notice, Some(counts.lines));
        }
        // A recording has no observation times: pending times are measured live only.
        deriver.take_pod_starts();
        if let Some(metrics) = metrics {
            metrics.facts(&facts);
            metrics.derive_stats(deriver.stats(), counts.bad_lines);
        }
        if facts.is_empty() {
            continue;
        }
        let mut events = Vec::with_capacity(facts.len());
        for fact in &facts {
            match encode::encode(fact, config) {
                Ok(event) => events.push(event),
                // Configuration is validated up front, so this is a bug; say so and go on.
                Err(err) => {
                    tracing::error!(line = counts.lines, error = %err, "fact could not be encoded")
                }
            }
        }
        counts.events += events.len() as u64;
        if !emit(events) {
            break;
        }
    }
    Ok(counts)
}

pub(crate) fn report_bad_line(line: u64, bad: u64, err: &dyn std::fmt::Display) {
    if bad <= REPORTED_BAD_LINES {
        tracing::warn!(line, error = %err, "skipped bad line");
    }
    if bad == REPORTED_BAD_LINES {
        tracing::warn!("further bad lines are counted, not shown");
    }
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
        let mut deriver = Deriver::new(crate::derive::DeriveConfig::default());
        let config = EncodeConfig::default();
        replay(input.as_slice(), &mut deriver, &config, None, |_| true).expect("replays");
        deriver.open_runs()
    }

    #[test]
    fn closed_runs_shrink_to_tombstones_and_offloaded_ones_stay_open() {
        assert_eq!(open_after("kfp-v2-success.jsonl"), 0);
        assert_eq!(open_after("kfp-v2-compressed-nodes.jsonl"), 0);
        // Both stay open: the offloaded one (its task Events may follow its end) and the one
        // whose end only an Event told (its status may still follow).
        assert_eq!(open_after("offloaded-and-deleted-workflows.jsonl"), 2);
    }

    #[test]
    fn lines_are_split_and_overlong_ones_bounded() {
        let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
        long.extend_from_slice(b"\nnext\r\nlast");
        let mut input = std::io::BufReader::with_capacity(4096, long.as_slice());
        let mut buf = Vec::new();
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf.len(), MAX_LINE_BYTES + 1);
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf, b"next");
        assert!(read_line(&mut input, &mut buf).expect("read"));
        assert_eq!(buf, b"last");
        assert!(!read_line(&mut input, &mut buf).expect("read"));
    }
}
