//! Test support: runs recordings through the library exactly as `replay` does, without sinks.

#![allow(dead_code)]

pub mod bridge;
pub mod helm;
pub mod kafka_server;
pub mod live;
pub mod nats_server;
pub mod rabbit_server;

use kfp_event_bridge::derive::{DeriveConfig, Deriver};
use kfp_event_bridge::encode::EncodeConfig;
use kfp_event_bridge::pipeline::{self, Finish, Stage};
use kfp_event_bridge::source::lines::ReplayCounts;
use std::path::{Path, PathBuf};

pub fn recordings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recordings")
}

/// The recordings in `examples/recordings/<sub>` (`""`: the top folder), sorted by name; at least
/// `min` of them.
fn recordings_in(sub: &str, min: usize) -> Vec<PathBuf> {
    let dir = recordings_dir().join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= min, "bundled recordings missing: {files:?}");
    files
}

/// Every bundled recording of the top folder, sorted by name.
pub fn recordings() -> Vec<PathBuf> {
    recordings_in("", 9)
}

/// The bundled recordings of retried runs (`examples/recordings/retries/`), sorted by name.
pub fn retry_recordings() -> Vec<PathBuf> {
    recordings_in("retries", 6)
}

/// The bundled recordings of real node-tree shapes (`examples/recordings/fidelity/`), sorted.
pub fn fidelity_recordings() -> Vec<PathBuf> {
    recordings_in("fidelity", 1)
}

/// Every bundled recording, those of retried runs and real node-tree shapes included.
pub fn all_recording_files() -> Vec<PathBuf> {
    let mut files = recordings();
    files.extend(retry_recordings());
    files.extend(fidelity_recordings());
    files
}

/// Replays `input` through `deriver`, returning each event as its structured JSON line.
pub fn replay_bytes(input: &[u8], deriver: &mut Deriver) -> (ReplayCounts, Vec<String>) {
    let mut lines = Vec::new();
    let taken = std::mem::replace(deriver, Deriver::new(DeriveConfig::default()));
    let mut stage = Stage::new(taken, EncodeConfig::default(), Finish::AtDerive);
    let counts = pipeline::replay(input, &mut stage, None, |events| {
        for event in &events {
            lines.push(String::from_utf8(sink_core::structured::to_vec(event)).expect("utf-8"));
        }
        true
    })
    .expect("reading from memory cannot fail");
    *deriver = stage.into_deriver();
    (counts, lines)
}

pub fn replay_file(path: &Path) -> Vec<String> {
    let input = std::fs::read(path).expect("recording readable");
    let (counts, lines) = replay_bytes(&input, &mut Deriver::new(DeriveConfig::default()));
    assert_eq!(counts.bad_lines, 0, "{} has bad lines", path.display());
    lines
}
