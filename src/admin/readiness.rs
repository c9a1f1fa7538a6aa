//! Readiness: whether this replica can do its work now, judged from the state the command's
//! parts push ([`Bridge`]): leader election, the watches' first lists and failures, each sink's
//! last health check. `/readyz` answers with the report, one check per line.

use super::sinks::SinkBoard;
use crate::metrics::{Bridge, Role, lock};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// `(ready, report)`: every check with its state, one per line, failures first.
pub fn readiness(b: &Bridge, board: &SinkBoard) -> (bool, String) {
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
    for s in lock(&board.sinks).iter() {
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
    if let Some((name, health)) = lock(&board.dead_letter).as_ref() {
        match health {
            Some(Err(err)) => failed.push(format!("dead-letter sink {name}: {err}")),
            None => failed.push(format!("dead-letter sink {name}: not checked yet")),
            Some(Ok(())) => passed.push(format!("dead-letter sink {name}: ok")),
        }
    }
    (failed.is_empty(), report(&failed, &passed))
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
