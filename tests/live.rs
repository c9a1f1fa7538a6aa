//! The live input end to end: the real binary watching a fake apiserver that plays recordings,
//! publishing to a file, checkpointing to a directory.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::bridge::{Scratch, replayed, stderr, wait};
use support::live::*;

fn replay_ids(scratch: &Scratch, lines: &[String]) -> BTreeSet<String> {
    let path = scratch.path("recording.jsonl");
    write_recording(&path, lines);
    replayed(&path)
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// 209 workflows (19 copies of the bundled runs: successes, failures, retries, image pull and
/// scheduling problems, OOM, skipped steps, compressed, offloaded and deleted workflows), every
/// change played while the bridge watches: the same ids as `replay`, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_multi_run_scenario_publishes_what_replay_does() {
    let scratch = Scratch::new("live-scenario");
    let cluster = Cluster::start(&scratch).await;
    let lines = many_runs(19);
    let want = replay_ids(&scratch, &lines);
    assert!(want.len() > 1500, "{} events", want.len());
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    wait_for_log(&mut bridge, "watch synced", Duration::from_secs(30)).await;
    cluster.feed(&lines);
    let got = settle(&out, want.len(), Duration::from_secs(2), Duration::from_secs(90)).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut bridge));
    let counts = id_counts(&out);
    assert_eq!(got, counts.len(), "an id was published twice");
    let ids: BTreeSet<String> = counts.into_keys().collect();
    assert_eq!(ids, want, "live and replay differ");
}
