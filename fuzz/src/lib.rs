//! What the fuzz targets share: feeding observation lines through a fresh deriver and the
//! invariants every derivation must keep, asserted (a violation is a crash libFuzzer keeps).

use kfp_event_bridge::derive::{DeriveConfig, Deriver};
use kfp_event_bridge::encode::{self, EncodeConfig};
use kfp_event_bridge::source::recording;
use std::collections::BTreeMap;

/// Derives `lines` with a fresh deriver; per fact its CloudEvent id, and checks on the way that
/// every fact encodes to an event that parses back as JSON with the same id.
pub fn derive_ids(lines: &[&[u8]]) -> Vec<(String, bool, String)> {
    let mut deriver = Deriver::new(DeriveConfig::default());
    let mut out = Vec::new();
    for line in lines {
        let Ok(Some(observed)) = recording::decode(line) else {
            continue;
        };
        for fact in deriver.observe(&observed) {
            let event =
                encode::encode(&fact, &EncodeConfig::default()).expect("facts always encode");
            let bytes = sink_core::structured::to_vec(&event);
            let back: serde_json::Value =
                serde_json::from_slice(&bytes).expect("an encoded event is JSON");
            let id = back["id"].as_str().expect("an event has an id").to_owned();
            let key = fact.key();
            let attempt = format!("{}/{}/{}", key.workflow_uid, key.node_id, key.retries);
            out.push((id, fact.kind.is_terminal(), attempt));
        }
    }
    out
}

/// The invariants of one derivation of `lines`: no id twice, at most one terminal fact per run
/// or task attempt, and the same ids in the same order when derived again.
pub fn check(lines: &[&[u8]]) {
    let first = derive_ids(lines);
    let mut seen = std::collections::BTreeSet::new();
    let mut terminals: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, terminal, attempt) in &first {
        assert!(seen.insert(id.as_str()), "id {id} twice");
        if *terminal {
            let n = terminals.entry(attempt.as_str()).or_default();
            *n += 1;
            assert!(*n <= 1, "two terminal facts for {attempt}");
        }
    }
    let again = derive_ids(lines);
    assert_eq!(
        first.iter().map(|f| &f.0).collect::<Vec<_>>(),
        again.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "ids differ between two derivations"
    );
}
