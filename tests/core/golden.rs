//! Golden tests: each bundled recording gives exactly the CloudEvents in `tests/golden/`.
//!
//! The golden files were reviewed by a person (see tests/golden/REVIEW.md). After an intended
//! change, `BLESS=1 cargo test --test core golden::` rewrites them; review the diff before committing.

use crate::support;

use std::path::Path;

#[test]
fn every_recording_matches_its_golden_file() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let mut mismatches = Vec::new();
    for recording in support::all_recording_files() {
        // `retries/NAME` for the retried runs, as in examples/recordings/.
        let name = recording
            .strip_prefix(support::recordings_dir())
            .expect("under examples/recordings")
            .to_string_lossy()
            .into_owned();
        let mut got = support::replay_file(&recording).join("\n");
        got.push('\n');
        let golden = golden_dir.join(&name);
        if bless {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            let first = got.lines().zip(want.lines()).position(|(g, w)| g != w);
            mismatches.push(format!(
                "{name}: {} events, golden has {}; first difference at event {:?}",
                got.lines().count(),
                want.lines().count(),
                first.map(|i| i + 1)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (BLESS=1 to rewrite, then review):\n{}",
        mismatches.join("\n")
    );
}
