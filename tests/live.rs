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

/// `kill -9` at six points — during the first list, mid-checkpoint-write (a shard's temporary
/// file exists), while new workflows arrive, and at random moments — then a clean run: every
/// fact out at least once, duplicates only as the same event again and at most the in-flight
/// window per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_loses_nothing_and_repeats_at_most_the_window() {
    const WINDOW: usize = 64;
    let scratch = Scratch::new("live-kill");
    let cluster = Cluster::start(&scratch).await;
    let lines = final_states(&many_runs(19));
    let want = replay_ids(&scratch, &lines);
    let (half, three_quarters) = (lines.len() / 2, lines.len() * 3 / 4);
    cluster.feed(&lines[..half]);
    let state = scratch.path("state");
    let window = WINDOW.to_string();
    let extra = ["--max-in-flight", window.as_str(), "--checkpoint-interval", "50ms"];
    let mut outputs = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random_ms = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    let mut mid_write = false;
    for point in 0..6 {
        let out = scratch.path(&format!("out-{point}.jsonl"));
        let mut bridge = live_bridge(&cluster, &out, &state, &extra);
        outputs.push(out.clone());
        match point {
            // Mid-checkpoint-write: a shard's temporary file exists at the moment of the kill.
            1 => {
                wait_for_log(&mut bridge, "watch synced", Duration::from_secs(30)).await;
                cluster.feed(&lines[half..three_quarters]);
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    let writing = std::fs::read_dir(&state).into_iter().flatten().flatten().any(|e| {
                        e.file_name().to_string_lossy().ends_with(".tmp")
                    });
                    if writing {
                        mid_write = true;
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            // While the second half of the workflows arrives.
            2 => {
                tokio::time::sleep(Duration::from_millis(random_ms(100, 400))).await;
                cluster.feed(&lines[three_quarters..]);
                tokio::time::sleep(Duration::from_millis(random_ms(0, 300))).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(random_ms(50, 1500))).await,
        }
        kill9(&mut bridge);
    }
    assert!(mid_write, "never caught a checkpoint write in progress");
    let out = scratch.path("out-final.jsonl");
    outputs.push(out.clone());
    let mut bridge = live_bridge(&cluster, &out, &state, &extra);
    wait_for_log(&mut bridge, "watch synced", Duration::from_secs(30)).await;
    // Quiet for a while: the final run has caught up.
    let t0 = std::time::Instant::now();
    loop {
        let seen: BTreeSet<String> = read_outputs(&outputs)
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        if seen.is_superset(&want) || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&out, 0, Duration::from_secs(2), Duration::from_secs(30)).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut bridge));

    let events = read_outputs(&outputs);
    let mut first: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut duplicates = 0;
    for e in &events {
        let id = e["id"].as_str().expect("id").to_owned();
        match first.get(&id) {
            Some(before) => {
                duplicates += 1;
                assert_eq!(before, e, "id {id} published twice with different content");
            }
            None => {
                first.insert(id, e.clone());
            }
        }
    }
    let ids: BTreeSet<String> = first.into_keys().collect();
    let missing: Vec<_> = want.difference(&ids).collect();
    if !missing.is_empty() {
        let all = replayed(&scratch.path("recording.jsonl"));
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for e in all.iter().filter(|e| missing.contains(&&e["id"].as_str().unwrap().to_owned())) {
            let wf = format!("{} {}", e["subject"], e["data"]["EventType"]);
            *kinds.entry(format!("{} {wf}", e["type"])).or_default() += 1;
        }
        eprintln!("MISSING {kinds:#?}");
        eprintln!("LOG {}", stderr(&mut bridge).lines().filter(|l| !l.contains("offloaded")).collect::<Vec<_>>().join("\nLOG "));
    }
    assert!(missing.is_empty(), "{} facts never published: {missing:?}", missing.len());
    let unknown: Vec<_> = ids.difference(&want).collect();
    assert!(unknown.is_empty(), "ids replay does not know: {unknown:?}");
    eprintln!(
        "{} events published for {} facts over 6 kills: {duplicates} duplicates",
        events.len(),
        want.len()
    );
    assert!(duplicates <= 6 * WINDOW, "{duplicates} duplicates for 6 kills, window {WINDOW}");
}
