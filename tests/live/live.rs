//! The live input end to end: the real binary watching a fake apiserver that plays recordings,
//! publishing to a file, checkpointing to a directory.

use crate::support;

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
    let lines = many_runs(19);
    let want = live_equals_replay(&scratch, &lines, Duration::from_secs(90)).await;
    assert!(want > 1500, "{want} events");
}

/// Plays `lines` while a bridge watches: its ids are `replay`'s, each once. Returns how many.
async fn live_equals_replay(scratch: &Scratch, lines: &[String], limit: Duration) -> usize {
    let cluster = Cluster::start(scratch).await;
    let want = replay_ids(scratch, lines);
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    cluster.feed(lines);
    let got = settle(&out, want.len(), Duration::from_secs(2), limit).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut bridge));
    let counts = id_counts(&out);
    assert_eq!(got, counts.len(), "an id was published twice");
    let ids: BTreeSet<String> = counts.into_keys().collect();
    assert_eq!(ids, want, "live and replay differ");
    want.len()
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
    // The catch-up's bound set to the window too: every kill, during a first list or after,
    // repeats at most the window (the catch-up's own bound has its own test).
    let extra = [
        "--max-in-flight",
        window.as_str(),
        "--catch-up-bound",
        window.as_str(),
        "--checkpoint-interval",
        "50ms",
    ];
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
                wait_synced(&mut bridge, Duration::from_secs(30)).await;
                cluster.feed(&lines[half..three_quarters]);
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    let writing = std::fs::read_dir(&state)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
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
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
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
        for e in all
            .iter()
            .filter(|e| missing.contains(&&e["id"].as_str().unwrap().to_owned()))
        {
            let wf = format!("{} {}", e["subject"], e["data"]["EventType"]);
            *kinds.entry(format!("{} {wf}", e["type"])).or_default() += 1;
        }
        eprintln!("MISSING {kinds:#?}");
        eprintln!(
            "LOG {}",
            stderr(&mut bridge)
                .lines()
                .filter(|l| !l.contains("offloaded"))
                .collect::<Vec<_>>()
                .join("\nLOG ")
        );
    }
    assert!(
        missing.is_empty(),
        "{} facts never published: {missing:?}",
        missing.len()
    );
    let unknown: Vec<_> = ids.difference(&want).collect();
    assert!(unknown.is_empty(), "ids replay does not know: {unknown:?}");
    eprintln!(
        "{} events published for {} facts over 6 kills: {duplicates} duplicates",
        events.len(),
        want.len()
    );
    assert!(
        duplicates <= 6 * WINDOW,
        "{duplicates} duplicates for 6 kills, window {WINDOW}"
    );
}

/// ConfigMap writes (creates and replaces) the fake API server has served so far.
fn configmap_writes(api: &fake_apiserver::FakeApiServer) -> u64 {
    api.costs()
        .iter()
        .filter(|((verb, resource), _)| {
            resource == "configmaps" && (verb == "create" || verb == "update")
        })
        .map(|(_, c)| c.requests)
        .sum()
}

/// A restart's backlog — 190 finished workflows present when `run` starts, ~1,700 facts — costs
/// ConfigMap writes by shard, not by facts: with `--max-in-flight 32` a write per 16 done facts
/// would be over a hundred batches of several shards each; the catch-up writes each of the 8
/// shards about once when every watch has listed, and once more at shutdown. A restart then
/// publishes nothing: the checkpoint holds every fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_writes_each_checkpoint_shard_a_few_times_not_per_window() {
    let scratch = Scratch::new("live-catch-up");
    let cluster = Cluster::start(&scratch).await;
    // Without the workflows known only from their Events: those come out 10 s after the lists
    // (`presence::UNSEEN_GRACE`), after the catch-up, under the steady bound.
    let all = final_states(&many_runs(19));
    let object = |l: &String| serde_json::from_str::<serde_json::Value>(l).expect("json");
    let workflows: BTreeSet<String> = all
        .iter()
        .map(object)
        .filter(|v| v["object"]["kind"] == "Workflow")
        .map(|v| {
            v["object"]["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let lines: Vec<String> = all
        .into_iter()
        .filter(|l| {
            let v = object(l);
            v["object"]["kind"] != "Event"
                || workflows.contains(v["object"]["involvedObject"]["uid"].as_str().unwrap_or(""))
        })
        .collect();
    let want = replay_ids(&scratch, &lines);
    cluster.feed(&lines);
    let out = scratch.path("out.jsonl");
    let extra = [
        "--checkpoint",
        "configmap:default/catch-up?shards=8",
        "--max-in-flight",
        "32",
        "--checkpoint-interval",
        "30s",
    ];
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    settle(
        &out,
        want.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    let counts = id_counts(&out);
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(counts.values().all(|n| *n == 1), "an id twice");
    let writes = configmap_writes(&cluster.api);
    eprintln!(
        "{} facts caught up with {writes} ConfigMap writes",
        want.len()
    );
    assert!(want.len() > 1500, "{} facts", want.len());
    assert!(
        writes <= 2 * 8,
        "{writes} ConfigMap writes for {} facts over 8 shards",
        want.len()
    );
    // The same catch-up under the steady bound (`--catch-up-bound` = `--max-in-flight`) writes
    // per half window, as every catch-up did before.
    let small = scratch.path("out-small.jsonl");
    let mut steady = live_bridge(
        &cluster,
        &small,
        &scratch.path("state"),
        &[
            "--checkpoint",
            "configmap:default/catch-up-small?shards=8",
            "--max-in-flight",
            "32",
            "--catch-up-bound",
            "32",
            "--checkpoint-interval",
            "30s",
        ],
    );
    wait_synced(&mut steady, Duration::from_secs(30)).await;
    settle(
        &small,
        want.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    sigterm(&steady);
    assert!(wait(&mut steady, Duration::from_secs(30)).await.success());
    let per_window = configmap_writes(&cluster.api) - writes;
    eprintln!("under the steady bound: {per_window} ConfigMap writes");
    assert!(per_window > 5 * writes, "{per_window} vs {writes}");
    // Everything is in the checkpoint: a restart publishes nothing more.
    let mut again = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_synced(&mut again, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&again);
    assert!(wait(&mut again, Duration::from_secs(30)).await.success());
    assert_eq!(
        count_lines(&out),
        want.len(),
        "published again after a restart"
    );
}

/// `kill -9` in the middle of a catch-up repeats at most `--catch-up-bound` facts — and the
/// bound is not vacuous: set far below the backlog, the kill repeats some, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_catch_up_repeats_at_most_the_catch_up_bound() {
    const BOUND: usize = 300;
    let scratch = Scratch::new("live-catch-up-kill");
    let cluster = Cluster::start(&scratch).await;
    let lines = final_states(&many_runs(19));
    let want = replay_ids(&scratch, &lines);
    cluster.feed(&lines);
    let state = scratch.path("state");
    let bound = BOUND.to_string();
    let extra = [
        "--max-in-flight",
        "16",
        "--catch-up-bound",
        bound.as_str(),
        "--checkpoint-interval",
        "30s",
    ];
    let first = scratch.path("out-1.jsonl");
    let mut bridge = live_bridge(&cluster, &first, &state, &extra);
    let t0 = std::time::Instant::now();
    while count_lines(&first) < want.len() / 2 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kill9(&mut bridge);
    let published = count_lines(&first);
    assert!(
        published < want.len(),
        "the catch-up was over before the kill"
    );
    let second = scratch.path("out-2.jsonl");
    let mut bridge = live_bridge(&cluster, &second, &state, &extra);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    // Until every fact is out (the workflows known only from their Events come out once no
    // list has shown them for a while), then quiet.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let seen: BTreeSet<String> = read_outputs(&[first.clone(), second.clone()])
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        if seen.is_superset(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&second, 0, Duration::from_secs(1), Duration::from_secs(30)).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "{status:?} {}",
        stderr(&mut bridge)
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let events = read_outputs(&[first.clone(), second.clone()]);
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let lost = want.difference(&ids).count();
    if lost > 0 {
        let all = replayed(&scratch.path("recording.jsonl"));
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for e in all
            .iter()
            .filter(|e| !ids.contains(e["id"].as_str().unwrap()))
        {
            *kinds
                .entry(format!("{} {}", e["type"], e["data"]["EventType"]))
                .or_default() += 1;
        }
        eprintln!("LOST {kinds:#?}");
        eprintln!(
            "LOG {}",
            stderr(&mut bridge)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\nLOG ")
        );
    }
    assert_eq!(lost, 0, "facts lost across the kill");
    assert!(ids.is_subset(&want));
    let repeated = events.len() - ids.len();
    eprintln!(
        "kill -9 after {published} of {} facts: {repeated} repeated",
        want.len()
    );
    assert!(repeated <= BOUND, "{repeated} repeated, bound {BOUND}");
}

/// Publishing does not wait for checkpoint writes: with an API server that takes 0.3 s per
/// request (so per shard a checkpoint write touches), workflows created one by one each reach
/// the sink in a fraction of that (the write goes on beside intake; only the bound would make
/// intake wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_do_not_wait_for_a_slow_checkpoint_write() {
    let scratch = Scratch::new("live-slow-checkpoint");
    let extra = [
        "--checkpoint",
        "configmap:default/slow?shards=4",
        "--checkpoint-interval",
        "100ms",
    ];
    let (cluster, out, mut bridge) = synced_then_slowed(&scratch, &extra).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let name = format!("slow-ckpt-{i}");
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let before = count_lines(&out);
        let t0 = std::time::Instant::now();
        cluster.api.apply(fake_apiserver::synthetic::workflow(
            "team-a", &name, &uid, 3,
        ));
        while count_lines(&out) == before && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    cluster.api.set_cost(fake_apiserver::Cost::default());
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    latencies.sort();
    let writes = configmap_writes(&cluster.api);
    eprintln!("latencies {latencies:?}; {writes} ConfigMap writes");
    assert!(
        writes >= 5,
        "the checkpoint was written while workflows arrived (one journal write at a time)"
    );
    let worst = *latencies.last().expect("latencies");
    assert!(
        worst < Duration::from_millis(150),
        "an event waited {worst:?} (a checkpoint write takes ≥ 300 ms a shard)"
    );
    let fields = final_checkpoint_line(&stderr(&mut bridge));
    assert_eq!(
        (fields["waits"].as_u64(), fields["waited_ms"].as_u64()),
        (Some(0), Some(0)),
        "publishing never waited at the bound: {fields}"
    );
}

/// A bridge (with `extra` flags) synced to a fake API server that then takes 0.3 s a request;
/// the cluster, the bridge's output file and the bridge.
async fn synced_then_slowed(
    scratch: &Scratch,
    extra: &[&str],
) -> (Cluster, std::path::PathBuf, std::process::Child) {
    let cluster = Cluster::start(scratch).await;
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), extra);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    cluster.api.set_cost(fake_apiserver::Cost {
        per_request: Duration::from_millis(300),
        write_bytes_per_sec: None,
    });
    (cluster, out, bridge)
}

/// The fields of the bridge's last log line, `checkpoint written` (JSON logs).
fn final_checkpoint_line(log: &str) -> serde_json::Value {
    let line = log
        .lines()
        .rfind(|l| l.contains("checkpoint written"))
        .unwrap_or_else(|| panic!("no `checkpoint written` line: {log}"));
    let value: serde_json::Value = serde_json::from_str(line).expect("json log line");
    value["fields"].clone()
}

/// At the bound, publishing does wait for the checkpoint — and says so: with `--max-in-flight 4`
/// and an API server taking 0.3 s a request, one workflow of 20 tasks (more than 4 facts at
/// once) is published in steps of two facts per checkpoint write; the waits are counted and
/// timed (in the final log line, from the counters the metrics
/// `kfp_event_bridge_checkpoint_waits_total` and `…_wait_seconds_total` export), and every fact
/// still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_bound_publishing_waits_for_the_checkpoint_and_counts_the_wait() {
    let scratch = Scratch::new("live-bound-wait");
    let extra = [
        "--checkpoint",
        "configmap:default/bound?shards=4",
        "--max-in-flight",
        "4",
    ];
    let (cluster, out, mut bridge) = synced_then_slowed(&scratch, &extra).await;
    let uid = "00000000-0000-4000-8000-00000000b0b0";
    cluster.api.apply(fake_apiserver::synthetic::workflow(
        "team-a",
        "bound-wait",
        uid,
        20,
    ));
    // run.queued, run.started and 20 task.started.
    let t0 = std::time::Instant::now();
    while count_lines(&out) < 22 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.api.set_cost(fake_apiserver::Cost::default());
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    assert_eq!(count_lines(&out), 22, "{}", stderr(&mut bridge));
    let fields = final_checkpoint_line(&stderr(&mut bridge));
    let waits = fields["waits"].as_u64().expect("waits");
    let waited = fields["waited_ms"].as_u64().expect("waited_ms");
    assert!(waits >= 3, "{waits} waits: {fields}");
    assert!(
        waited >= 300 * 3,
        "{waited} ms waited over {waits} waits of at least one 300 ms write: {fields}"
    );
}

/// Four copies of the bundled runs, one through each fault: a watch cut mid-stream (resumed from
/// its resourceVersion), a forced 410 Gone (re-list), and the API server answering 503 for 30 s
/// while workflows run to their end. Every fact once, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cuts_410_and_a_30_s_outage_lose_and_repeat_nothing() {
    let scratch = Scratch::new("live-faults");
    let cluster = Cluster::start(&scratch).await;
    let all = many_runs(4);
    let per_copy = all.len() / 4;
    let copy = |n: usize| all[n * per_copy..(n + 1) * per_copy].to_vec();
    let outage = final_states(&copy(3));
    let mut played: Vec<String> = (0..3).flat_map(copy).collect();
    played.extend(outage.iter().cloned());
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    let lists = || {
        cluster
            .api
            .requests()
            .get("GET /apis/argoproj.io/v1alpha1/workflows")
            .copied()
            .unwrap_or(0)
    };

    // Cut mid-stream: half a copy, cut, the other half.
    let first = copy(0);
    cluster.feed(&first[..per_copy / 2]);
    cluster.api.cut_watches();
    cluster.feed(&first[per_copy / 2..]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lists(),
        1,
        "a cut watch resumes from its resourceVersion, no re-list"
    );

    // 410: watches cut and resuming refused, so the watcher lists again. (Caught up first: a
    // workflow deleted while a watch is away shows only in its Events, see the deletion test.)
    cluster.feed(&copy(1));
    let so_far: Vec<String> = (0..2).flat_map(copy).collect();
    settle(
        &out,
        replay_ids(&scratch, &so_far).len(),
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await;
    cluster.api.force_410();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(lists() >= 2, "410 Gone makes the watcher list again");
    cluster.feed(&copy(2));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 30 s of 503 while the fourth copy's workflows run to their end.
    cluster.api.set_unavailable(true);
    cluster.feed(&outage);
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.api.set_unavailable(false);

    let want_len = replay_ids(&scratch, &played).len();
    let t0 = std::time::Instant::now();
    while count_lines(&out) < want_len && t0.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = settle(&out, 0, Duration::from_secs(3), Duration::from_secs(30)).await;
    let want = replay_ids(&scratch, &played);
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    let log = stderr(&mut bridge);
    let have: BTreeSet<String> = id_counts(&out).into_keys().collect();
    for e in replayed(&scratch.path("recording.jsonl")) {
        if !have.contains(e["id"].as_str().unwrap()) {
            eprintln!(
                "MISSING {} {} {}",
                e["type"], e["subject"], e["data"]["EventType"]
            );
        }
    }
    assert!(status.success(), "{log}");
    assert!(log.contains("watch failed"), "the outage was seen");
    let counts = id_counts(&out);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(got, counts.len());
    let ids: BTreeSet<String> = counts.into_keys().collect();
    let missing: Vec<_> = want.difference(&ids).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(ids, want);
}

fn recording_lines(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/recordings")
        .join(name);
    std::fs::read_to_string(path)
        .expect("recording")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A workflow deleted before the bridge saw its end (API down while it finished, then 410 so
/// the final state is not replayed): its start from the status, the rest from its Events. A
/// workflow that ran start to end while the bridge was stopped: its facts on the next start,
/// with their cluster timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_missed_workflows_are_published() {
    let scratch = Scratch::new("live-deleted");
    let cluster = Cluster::start(&scratch).await;
    let out = scratch.path("out.jsonl");
    let state = scratch.path("state");
    let mut bridge = live_bridge(&cluster, &out, &state, &[]);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;

    let deleted = recording_lines("kfp-v2-success.jsonl");
    let want_deleted = replay_ids(&scratch, &deleted);
    cluster.feed(&deleted[..15]);
    settle(&out, 3, Duration::from_secs(1), Duration::from_secs(30)).await;
    cluster.api.set_unavailable(true);
    cluster.feed(&deleted[15..]);
    assert!(cluster.api.delete(
        fake_apiserver::Kind::Workflow,
        "kubeflow-user",
        "iris-training-8xk2p"
    ));
    cluster.api.force_410();
    cluster.api.set_unavailable(false);
    settle(
        &out,
        want_deleted.len(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let ids: BTreeSet<String> = id_counts(&out).into_keys().collect();
    assert_eq!(ids, want_deleted, "the deleted workflow's facts");

    // Stopped; a workflow runs start to end; started again.
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    let missed = recording_lines("kfp-v2-oomkilled.jsonl");
    let want_missed = replay_ids(&scratch, &final_states(&missed));
    cluster.feed(&missed);
    let mut bridge = live_bridge(&cluster, &out, &state, &[]);
    let want: BTreeSet<String> = want_deleted.union(&want_missed).cloned().collect();
    let got = settle(
        &out,
        want.len(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    let counts = id_counts(&out);
    assert_eq!(
        got,
        counts.len(),
        "nothing published twice across the restart"
    );
    assert_eq!(counts.into_keys().collect::<BTreeSet<_>>(), want);
    let events = support::bridge::read_events(&out);
    let types: BTreeSet<&str> = events[want_deleted.len()..]
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert!(types.contains("org.kubeflow.pipelines.run.started"));
    assert!(types.contains("org.kubeflow.pipelines.run.failed"));
    let run_failed = events
        .iter()
        .find(|e| e["type"] == "org.kubeflow.pipelines.run.failed")
        .expect("run.failed");
    assert!(
        run_failed["time"]
            .as_str()
            .expect("time")
            .starts_with("2026-03-14"),
        "the cluster's time, not the publish time: {}",
        run_failed["time"]
    );
}

/// Two replicas with leader election and a shared ConfigMap checkpoint: one publishes, the
/// other stands by; `kill -9` the leader and the standby takes over within the lease duration
/// (plus one retry period) and carries on from the checkpoint: together, every fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_without_gaps() {
    let scratch = Scratch::new("live-leader");
    let cluster = Cluster::start(&scratch).await;
    let lines = many_runs(4);
    let half = lines.len() / 2;
    let want = replay_ids(&scratch, &lines);
    let replica = |id: &str, out: &std::path::Path| {
        live_bridge(
            &cluster,
            out,
            &scratch.path("unused"),
            &[
                "--checkpoint",
                "configmap:default/kfp-event-bridge-checkpoint",
                "--leader-election",
                "--leader-election-namespace",
                "default",
                "--leader-election-identity",
                id,
            ]
            .iter()
            .chain(&FAST_LEASE)
            .copied()
            .collect::<Vec<_>>(),
        )
    };
    let (out_a, out_b) = (scratch.path("a.jsonl"), scratch.path("b.jsonl"));
    let mut a = replica("replica-a", &out_a);
    wait_for_log(&mut a, "leadership acquired", Duration::from_secs(30)).await;
    let mut b = replica("replica-b", &out_b);
    wait_for_log(&mut b, "standing by", Duration::from_secs(30)).await;
    wait_synced(&mut a, Duration::from_secs(30)).await;
    cluster.feed(&lines[..half]);
    let first = replay_ids(&scratch, &lines[..half]);
    settle(
        &out_a,
        first.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(count_lines(&out_b), 0, "the standby published");
    assert!(
        !cluster
            .api
            .objects(fake_apiserver::Kind::ConfigMap)
            .is_empty(),
        "the leader checkpoints to ConfigMaps"
    );

    kill9(&mut a);
    let killed = std::time::Instant::now();
    wait_for_log(&mut b, "leadership acquired", Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_millis(3000 + 500 + 500),
        "takeover after {takeover:?}, lease 3 s"
    );
    wait_synced(&mut b, Duration::from_secs(30)).await;
    cluster.feed(&lines[half..]);
    let mut ids: BTreeSet<String> = id_counts(&out_a).into_keys().collect();
    let t0 = std::time::Instant::now();
    while !ids.is_superset(&want) && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ids = id_counts(&out_a).into_keys().collect();
        ids.extend(id_counts(&out_b).into_keys());
    }
    let missing: Vec<_> = want.difference(&ids).collect();
    assert!(missing.is_empty(), "lost across the failover: {missing:?}");

    // Another holder in the Lease (a partitioned replica's view): stop publishing at once.
    let mut lease = cluster
        .api
        .get(fake_apiserver::Kind::Lease, "default", "kfp-event-bridge")
        .expect("lease");
    lease["spec"]["holderIdentity"] = "replica-c".into();
    lease["spec"]["renewTime"] = "2099-01-01T00:00:00.000000Z".into();
    cluster.api.apply(lease);
    let lost_at = std::time::Instant::now();
    let status = wait(&mut b, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", stderr(&mut b));
    assert!(
        lost_at.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        lost_at.elapsed()
    );
    assert!(stderr(&mut b).contains("leadership lost"));
    let b_first: BTreeSet<String> = id_counts(&out_b).into_keys().collect();
    assert!(
        b_first.intersection(&first).count() <= 256,
        "the standby re-sent more than the in-flight window of what the leader had done"
    );
    eprintln!(
        "takeover after {takeover:?}; the standby re-sent {} of the leader's facts",
        b_first.intersection(&first).count()
    );
}

/// `record` writes what the watches see as a recording; `replay` of it gives the same facts as
/// the recording that was played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_a_recording_that_replays_to_the_same_facts() {
    let scratch = Scratch::new("live-record");
    let cluster = Cluster::start(&scratch).await;
    let lines = many_runs(1);
    let want = replay_ids(&scratch, &lines);
    let recorded = scratch.path("recorded.jsonl");
    let mut recorder = support::bridge::spawn_logged(
        std::process::Command::new(support::bridge::BIN)
            .args(["--log-format", "json", "record"])
            .arg(&recorded)
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .env_clear()
            .stdout(std::process::Stdio::null()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.feed(&lines);
    // The Event watch takes only the workflow controller's Events, as `run` does.
    let watched = lines
        .iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["object"]["kind"] != "Event"
                || v["object"]["source"]["component"] == "workflow-controller"
        })
        .count();
    assert!(
        watched < lines.len(),
        "the bundled recordings include another component's Event"
    );
    settle(
        &recorded,
        watched,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    sigterm(&recorder);
    let status = wait(&mut recorder, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut recorder));
    for line in std::fs::read_to_string(&recorded)
        .expect("recorded")
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["object"]["metadata"].get("managedFields").is_none());
        assert!(matches!(
            v["type"].as_str(),
            Some("ADDED" | "MODIFIED" | "DELETED")
        ));
    }
    let got: BTreeSet<String> = replayed(&recorded)
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got, want);
}

/// A client of the fake API server and a one-shard ConfigMap checkpoint `default/NAME`, for
/// tests that drive `Checkpoint` directly.
async fn one_shard_configmap_checkpoint(
    cluster: &Cluster,
    name: &str,
) -> (kube::Client, kfp_event_bridge::checkpoint::CheckpointSpec) {
    let client = kfp_event_bridge::source::live::client(Some(&cluster.kubeconfig))
        .await
        .expect("client");
    let spec = kfp_event_bridge::checkpoint::CheckpointSpec::ConfigMap {
        namespace: "default".into(),
        name: name.into(),
        shards: 1,
    };
    (client, spec)
}

/// Two writers of one ConfigMap checkpoint (a deposed leader still flushing): the second write
/// conflicts on the journal slot, reads the stored copy, merges and writes the union — nothing
/// either recorded is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_checkpoint_writers_merge_on_conflict() {
    use kfp_event_bridge::checkpoint::{Checkpoint, Entry};
    use kfp_event_bridge::model::Mark;
    let scratch = Scratch::new("live-cm");
    let cluster = Cluster::start(&scratch).await;
    let (client, spec) = one_shard_configmap_checkpoint(&cluster, "ckpt").await;
    let mut a = Checkpoint::open(&spec, Some(&client))
        .await
        .expect("open a");
    let mut b = Checkpoint::open(&spec, Some(&client))
        .await
        .expect("open b");
    a.record("uid-a", Mark { node: 1, slots: 1 }, 100);
    a.flush().await.expect("a writes");
    b.record("uid-b", Mark { node: 2, slots: 2 }, 100);
    b.record("uid-a", Mark { node: 1, slots: 2 }, 100);
    b.flush().await.expect("b conflicts, merges and writes");
    a.finish("uid-c", 50);
    a.flush().await.expect("a conflicts, merges and writes");
    let stored = Checkpoint::open(&spec, Some(&client))
        .await
        .expect("reopen");
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored.entry("uid-a"),
        Some(&Entry::Active {
            touched: 100,
            marks: vec![Mark { node: 1, slots: 3 }]
        })
    );
    assert!(matches!(stored.entry("uid-b"), Some(Entry::Active { .. })));
    assert_eq!(stored.entry("uid-c"), Some(&Entry::Finished { at: 50 }));
    let cm = cluster
        .api
        .get(fake_apiserver::Kind::ConfigMap, "default", "ckpt-j00")
        .expect("journal slot ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"]["kfp-event-bridge/checkpoint"],
        "ckpt"
    );
}

/// A ConfigMap shard grown past what one object may hold (the API server refuses a ConfigMap
/// over 1 MiB) is written as parts, each well under the limit; a small change is one small
/// write; when the shard shrinks, the parts no longer used are emptied — and every entry reads
/// back each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_shard_too_big_for_one_object_is_split_into_parts() {
    use kfp_event_bridge::checkpoint::{Checkpoint, Entry};
    use kfp_event_bridge::model::Mark;
    let scratch = Scratch::new("live-cm-parts");
    let cluster = Cluster::start(&scratch).await;
    let (client, spec) = one_shard_configmap_checkpoint(&cluster, "big").await;
    let parts = |api: &fake_apiserver::FakeApiServer| -> Vec<(String, usize)> {
        api.objects(fake_apiserver::Kind::ConfigMap)
            .iter()
            .filter(|cm| cm["metadata"]["labels"]["kfp-event-bridge/checkpoint"] == "big")
            .map(|cm| {
                let size = cm["data"].as_object().map_or(0, |d| {
                    d.iter()
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                        .sum()
                });
                (
                    cm["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    size,
                )
            })
            .collect()
    };
    // 3,000 running workflows of 50 done nodes: about 2.2 MB in one shard.
    let mut checkpoint = Checkpoint::open(&spec, Some(&client)).await.expect("open");
    for w in 0..3000 {
        for node in 0..50u64 {
            checkpoint.record(&format!("uid-{w:05}"), Mark { node, slots: 1 }, 100);
        }
    }
    checkpoint
        .flush()
        .await
        .expect("a shard over 1 MiB is written as parts");
    let written = parts(&cluster.api);
    assert!(written.len() >= 8, "{written:?}");
    let total: usize = written.iter().map(|(_, size)| size).sum();
    assert!(total > 2_000_000, "{total}");
    for (name, size) in &written {
        assert!(*size < 300 * 1024, "{name}: {size} bytes");
    }
    assert_eq!(
        Checkpoint::open(&spec, Some(&client))
            .await
            .expect("reopen")
            .len(),
        3000
    );
    // One more done fact is one small write (a journal slot), not a rewrite of the shard.
    let before = checkpoint.stats().clone();
    checkpoint.record("uid-00007", Mark { node: 99, slots: 1 }, 100);
    checkpoint.flush().await.expect("flush");
    assert_eq!(checkpoint.stats().writes - before.writes, 1);
    assert!(checkpoint.stats().bytes - before.bytes < 1024);
    // Most runs finish: tombstones take a few bytes, the shard fits one object again, and once
    // the journal is compacted into it the parts left over are deleted (after the part that now
    // holds their entries is written).
    for w in 10..3000 {
        checkpoint.finish(&format!("uid-{w:05}"), 200);
    }
    for node in 0..20 {
        checkpoint.record(
            "uid-00008",
            Mark {
                node: 1000 + node,
                slots: 1,
            },
            100,
        );
        checkpoint.flush().await.expect("flush");
    }
    // The compaction runs beside the journal writes: waited for.
    checkpoint.settle().await.expect("settle");
    let shards: Vec<_> = parts(&cluster.api)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("big-j"))
        .collect();
    let held: Vec<_> = shards.iter().filter(|(_, size)| *size > 0).collect();
    assert_eq!(held.len(), 1, "{shards:?}");
    assert_eq!(held[0].0, "big-00");
    assert_eq!(
        shards.len(),
        written.len(),
        "the other parts emptied, not deleted"
    );
    let names = kfp_event_bridge::checkpoint::object_names("big", 1);
    for (name, _) in parts(&cluster.api) {
        assert!(
            names.contains(&name),
            "{name} is not among the names RBAC lists"
        );
    }
    let reopened = Checkpoint::open(&spec, Some(&client))
        .await
        .expect("reopen");
    assert_eq!(reopened.len(), 3000);
    assert_eq!(
        reopened.entry("uid-02999"),
        Some(&Entry::Finished { at: 200 })
    );
    assert!(matches!(
        reopened.entry("uid-00007"),
        Some(Entry::Active { marks, .. }) if marks.len() == 51
    ));
    assert!(matches!(
        reopened.entry("uid-00008"),
        Some(Entry::Active { marks, .. }) if marks.len() == 70
    ));
}

/// A compaction runs beside the journal writes. Every API request slowed to 40 ms, a
/// ConfigMap checkpoint of 32 shards, and each flush touching nearly every shard: a compaction
/// (32 shard writes, four at a time: 320 ms at least) begins once half the 32 slots are held,
/// and while it runs the flushes go on into the other slots — no flush waits for it (each takes
/// one request, well under half a compaction). A slot is reused only after a compaction covering
/// it ended, so whatever is older than the last 32 flushes is in the shards themselves; and
/// everything reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_runs_beside_the_journal_writes() {
    use kfp_event_bridge::checkpoint::{Checkpoint, CheckpointSpec};
    use kfp_event_bridge::model::Mark;
    let scratch = Scratch::new("live-cm-beside");
    let cluster = Cluster::start(&scratch).await;
    let client = kfp_event_bridge::source::live::client(Some(&cluster.kubeconfig))
        .await
        .expect("client");
    let spec = CheckpointSpec::parse("configmap:default/beside?shards=32").expect("spec");
    let mut checkpoint = Checkpoint::open(&spec, Some(&client)).await.expect("open");
    let per_request = Duration::from_millis(40);
    cluster.api.set_cost(fake_apiserver::Cost {
        per_request,
        write_bytes_per_sec: None,
    });
    const ROUNDS: usize = 60;
    const SLOTS: usize = 32;
    const PER_ROUND: usize = 128;
    let uid = |round: usize, k: usize| format!("uid-{round:02}-{k:03}");
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        // 128 uids: nearly every one of the 32 shards touched, well inside one journal slot.
        for k in 0..PER_ROUND {
            checkpoint.record(&uid(round, k), Mark { node: 1, slots: 1 }, 100);
        }
        let began = std::time::Instant::now();
        checkpoint.flush().await.expect("flush");
        slowest = slowest.max(began.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(
        slowest < per_request * 4,
        "a flush took {slowest:?}: it waited for a compaction (8 rounds of {per_request:?})"
    );
    // Everything older than the last 32 flushes is in the shards.
    let in_shards: BTreeSet<String> = cluster
        .api
        .objects(fake_apiserver::Kind::ConfigMap)
        .iter()
        .filter(|cm| cm["metadata"]["labels"]["kfp-event-bridge/checkpoint"] == "beside")
        .filter(|cm| {
            !cm["metadata"]["name"]
                .as_str()
                .expect("name")
                .starts_with("beside-j")
        })
        .flat_map(|cm| {
            cm["data"]
                .as_object()
                .map(|d| d.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    for round in 0..ROUNDS - SLOTS {
        for k in 0..PER_ROUND {
            assert!(
                in_shards.contains(&uid(round, k)),
                "{} only in a journal slot",
                uid(round, k)
            );
        }
    }
    let writes = checkpoint.stats().writes;
    assert!(
        (ROUNDS as u64 + 16..=ROUNDS as u64 + 6 * 32).contains(&writes),
        "{writes} writes: a slot per flush, and a few compactions of 32 shards"
    );
    cluster.api.set_cost(fake_apiserver::Cost::default());
    checkpoint.settle().await.expect("settle");
    let reopened = Checkpoint::open(&spec, Some(&client))
        .await
        .expect("reopen");
    assert_eq!(reopened.len(), ROUNDS * PER_ROUND);
}

/// `--namespace` (repeated) and `--label-selector`: namespaced watches only, and only the
/// selected workflows' facts — Events of workflows the selector leaves out stay unpublished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_label_selector_scope_the_watches() {
    let scratch = Scratch::new("live-scope");
    let cluster = Cluster::start(&scratch).await;
    let lines = final_states(&many_runs(2));
    cluster.feed(&lines);
    let selected: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let m = &v["object"]["metadata"];
            (v["object"]["kind"] == "Workflow"
                && m["namespace"] == "kubeflow-user-c0"
                && m["labels"].get("pipeline/runid").is_some())
            .then(|| m["uid"].as_str().expect("uid").to_owned())
        })
        .collect();
    let kept: Vec<String> = lines
        .iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let o = &v["object"];
            let uid = if o["kind"] == "Workflow" {
                &o["metadata"]["uid"]
            } else {
                &o["involvedObject"]["uid"]
            };
            uid.as_str().is_some_and(|u| selected.contains(u))
        })
        .cloned()
        .collect();
    let want = replay_ids(&scratch, &kept);
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(
        &cluster,
        &out,
        &scratch.path("state"),
        &[
            "--namespace",
            "kubeflow-user-c0",
            "--namespace",
            "argo-c1",
            "--label-selector",
            "pipeline/runid",
        ],
    );
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    settle(
        &out,
        want.len(),
        Duration::from_secs(12),
        Duration::from_secs(60),
    )
    .await;
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    let ids: BTreeSet<String> = id_counts(&out).into_keys().collect();
    assert_eq!(ids, want);
    let requests = cluster.api.requests();
    for path in [
        "GET /apis/argoproj.io/v1alpha1/namespaces/kubeflow-user-c0/workflows",
        "GET /apis/argoproj.io/v1alpha1/namespaces/argo-c1/workflows",
        "GET /api/v1/namespaces/argo-c1/events",
    ] {
        assert!(
            requests.contains_key(path),
            "{path} not requested: {requests:?}"
        );
    }
    assert!(!requests.contains_key("GET /apis/argoproj.io/v1alpha1/workflows"));
}

/// The events in an output file the bridge may still be writing (or was killed writing): lines
/// that do not parse (a torn last line) are left out.
fn events_so_far(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The entry a file checkpoint in `state` holds for `uid`: its value in a shard file or a
/// journal slot (`shard-NN.json`, `journal-NN.json`, each a JSON object uid → entry; `f…` a
/// tombstone, `a…` done facts), read as a restart does — a union, so a tombstone anywhere wins.
fn checkpoint_entry(state: &std::path::Path, uid: &str) -> Option<String> {
    let values: Vec<String> = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("shard-") || name.starts_with("journal-")) && name.ends_with(".json")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| {
            serde_json::from_slice::<std::collections::BTreeMap<String, String>>(&b).ok()
        })
        .filter_map(|mut shard| shard.remove(uid))
        .collect();
    values
        .iter()
        .find(|v| v.starts_with('f'))
        .or(values.first())
        .cloned()
}

fn tombstoned(state: &std::path::Path, uid: &str) -> bool {
    checkpoint_entry(state, uid).is_some_and(|v| v.starts_with('f'))
}

/// What differs between two copies of an event: each top-level or `data` field, both values.
fn differences(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let mut out = Vec::new();
    for (scope, a, b) in [("", a, b), ("data.", &a["data"], &b["data"])] {
        let keys: BTreeSet<&String> = a
            .as_object()
            .into_iter()
            .chain(b.as_object())
            .flat_map(|o| o.keys())
            .collect();
        for key in keys
            .into_iter()
            .filter(|k| !scope.is_empty() || *k != "data")
        {
            if a.get(key) != b.get(key) {
                out.push(format!(
                    "{scope}{key}: {:?} then {:?}",
                    a.get(key),
                    b.get(key)
                ));
            }
        }
    }
    out.join(", ")
}

/// Which attempt of its run an event is about (`data.RunAttempt`, absent on the first).
fn attempt_of(e: &serde_json::Value) -> u64 {
    e["data"]["RunAttempt"].as_u64().unwrap_or(1)
}

fn is_run_terminal(e: &serde_json::Value) -> bool {
    matches!(
        e["type"].as_str(),
        Some("org.kubeflow.pipelines.run.succeeded" | "org.kubeflow.pipelines.run.failed")
    )
}

/// A KFP v1 run that fails, is retried (the same Workflow back to Running) and succeeds, with
/// `kill -9` before the retry is seen (the first attempt tombstoned), between the retry and its
/// end (the second attempt's start just out, maybe not checkpointed), and while the checkpoint
/// is written (a shard's temporary file exists, if caught), then a clean run: every fact of both
/// attempts out, repeats only as the same event, the first attempt not again once tombstoned,
/// and one run-terminal per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_killed_at_three_points_publishes_each_attempt_once() {
    let started = std::time::Instant::now();
    let scratch = Scratch::new("live-retry-kill");
    let lines = recording_lines("retries/kfp-v1.jsonl");
    assert_eq!(lines.len(), 13, "the recording changed");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let phase_of = |i: usize| parsed[i]["object"]["status"]["phase"].as_str();
    let is_workflow = |i: usize| parsed[i]["object"]["kind"] == "Workflow";
    let uid = parsed[0]["object"]["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    // Point 1: through the Failed state and the Events up to the next workflow state.
    let failed = (0..lines.len())
        .find(|&i| is_workflow(i) && phase_of(i) == Some("Failed"))
        .expect("a Failed state");
    let retry = (failed + 1..lines.len())
        .find(|&i| is_workflow(i))
        .expect("the retry");
    assert_eq!(phase_of(retry), Some("Running"), "the retry re-runs");
    // Point 2: from the retry through B running again (and its Event).
    let b_running = (retry..lines.len())
        .find(|&i| {
            is_workflow(i)
                && parsed[i]["object"]["status"]["nodes"]
                    .as_object()
                    .expect("nodes")
                    .values()
                    .any(|n| n["displayName"] == "B" && n["phase"] == "Running")
        })
        .expect("B running again");
    let second_end = (b_running + 1..lines.len())
        .find(|&i| is_workflow(i))
        .expect("more after B runs again");

    let want_events = {
        let path = scratch.path("recording.jsonl");
        write_recording(&path, &lines);
        replayed(&path)
    };
    let want = replay_ids(&scratch, &lines);
    assert_eq!(want.len(), want_events.len(), "replay repeats an id");
    let of_type = |t: &str| -> Vec<&serde_json::Value> {
        want_events
            .iter()
            .filter(|e| e["type"] == format!("org.kubeflow.pipelines.{t}"))
            .collect()
    };
    let run_started = of_type("run.started");
    assert_eq!(run_started.len(), 2, "a start per attempt");
    assert!(run_started[0]["data"].get("RunAttempt").is_none());
    assert_eq!(run_started[1]["data"]["RunAttempt"], 2);
    assert_eq!(run_started[1]["data"]["PreviousAttempt"]["Phase"], "Failed");
    let run_failed = of_type("run.failed");
    assert_eq!(run_failed.len(), 1);
    assert!(
        run_failed[0]["data"].get("RunAttempt").is_none(),
        "the first attempt's end carries no RunAttempt: {}",
        run_failed[0]
    );
    let run_succeeded = of_type("run.succeeded");
    assert_eq!(run_succeeded.len(), 1);
    assert_eq!(run_succeeded[0]["data"]["RunAttempt"], 2);
    let first_attempt: BTreeSet<String> = want_events
        .iter()
        .filter(|e| attempt_of(e) == 1)
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let has = |out: &std::path::Path, what: &dyn Fn(&serde_json::Value) -> bool| {
        events_so_far(out).iter().any(what)
    };

    let cluster = Cluster::start(&scratch).await;
    let state = scratch.path("state");
    let extra = ["--checkpoint-interval", "50ms"];
    let mut outputs = Vec::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x2545_f491_4f6c_dd1d, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed:#x}");
    let mut random_ms = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    let limit = Duration::from_secs(30);
    let poll_until =
        async |what: &str, done: &dyn Fn() -> bool, bridge: &mut std::process::Child| {
            let t0 = std::time::Instant::now();
            while !done() {
                if let Some(status) = bridge.try_wait().expect("try_wait") {
                    panic!(
                        "bridge exited ({status}) waiting for {what}: {}",
                        stderr(bridge)
                    );
                }
                assert!(
                    t0.elapsed() < limit,
                    "no {what} after {limit:?}: {}",
                    stderr(bridge)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
    // What the checkpoint held for the run when a bridge was killed.
    let at_kill = |point: &str| {
        eprintln!(
            "kill {point}: checkpoint entry {:?}",
            checkpoint_entry(&state, &uid)
        )
    };

    // 1. Before the retry is seen: the failed attempt out and tombstoned.
    let out = scratch.path("out-1.jsonl");
    outputs.push(out.clone());
    let mut bridge = live_bridge(&cluster, &out, &state, &extra);
    wait_synced(&mut bridge, limit).await;
    cluster.feed(&lines[..retry]);
    poll_until(
        "run.failed and a tombstone",
        &|| {
            has(&out, &|e| e["type"] == "org.kubeflow.pipelines.run.failed")
                && tombstoned(&state, &uid)
        },
        &mut bridge,
    )
    .await;
    kill9(&mut bridge);
    at_kill("1, before the retry");

    // 2. Between the retry and its end: killed as soon as the second attempt's start is out.
    let out = scratch.path("out-2.jsonl");
    outputs.push(out.clone());
    let mut bridge = live_bridge(&cluster, &out, &state, &extra);
    wait_synced(&mut bridge, limit).await;
    cluster.feed(&lines[retry..second_end]);
    poll_until(
        "the second attempt's run.started",
        &|| {
            has(&out, &|e| {
                e["type"] == "org.kubeflow.pipelines.run.started" && attempt_of(e) == 2
            })
        },
        &mut bridge,
    )
    .await;
    kill9(&mut bridge);
    at_kill("2, mid-attempt");

    // 3. Mid-write: killed when a shard's temporary file exists, or after a short random wait.
    let out = scratch.path("out-3.jsonl");
    outputs.push(out.clone());
    let mut bridge = live_bridge(&cluster, &out, &state, &extra);
    wait_synced(&mut bridge, limit).await;
    cluster.feed(&lines[second_end..]);
    let give_up = Duration::from_millis(random_ms(300, 2000));
    let t0 = std::time::Instant::now();
    let mut mid_write = false;
    while t0.elapsed() < give_up {
        mid_write = std::fs::read_dir(&state)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        if mid_write {
            break;
        }
        std::hint::spin_loop();
    }
    kill9(&mut bridge);
    at_kill(&format!(
        "3, after {:?}{}",
        t0.elapsed(),
        if mid_write {
            " mid-write"
        } else {
            ", no write caught"
        }
    ));

    // A clean run to the end.
    let out = scratch.path("out-final.jsonl");
    outputs.push(out.clone());
    let mut bridge = live_bridge(&cluster, &out, &state, &extra);
    wait_synced(&mut bridge, limit).await;
    let t0 = std::time::Instant::now();
    loop {
        let seen: BTreeSet<String> = read_outputs(&outputs)
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        if seen.is_superset(&want) || t0.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&out, 0, Duration::from_millis(500), limit).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, limit).await;
    let log = stderr(&mut bridge);
    assert!(status.success(), "{log}");

    let per_output: Vec<Vec<serde_json::Value>> = outputs
        .iter()
        .map(|o| read_outputs(std::slice::from_ref(o)))
        .collect();
    // Each id's first copy, with the output it came from; every later copy must equal it.
    let mut first = std::collections::BTreeMap::<String, (usize, serde_json::Value)>::new();
    let mut duplicates = Vec::new();
    let mut differ = Vec::new();
    for (n, e) in per_output
        .iter()
        .enumerate()
        .flat_map(|(n, o)| o.iter().map(move |e| (n + 1, e)))
    {
        let id = e["id"].as_str().expect("id").to_owned();
        match first.get(&id) {
            Some((m, before)) => {
                let what = format!("{} {} (outputs {m} and {n})", e["type"], e["subject"]);
                if before != e {
                    differ.push(format!("{id} {what}: {}", differences(before, e)));
                }
                duplicates.push(what);
            }
            None => {
                first.insert(id, (n, e.clone()));
            }
        }
    }
    let first: std::collections::BTreeMap<String, serde_json::Value> =
        first.into_iter().map(|(id, (_, e))| (id, e)).collect();
    let ids: BTreeSet<String> = first.keys().cloned().collect();
    let missing: Vec<_> = want_events
        .iter()
        .filter(|e| !ids.contains(e["id"].as_str().expect("id")))
        .map(|e| format!("{} {} attempt {}", e["type"], e["subject"], attempt_of(e)))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "LOG {}",
            log.lines()
                .filter(|l| !l.contains("offloaded"))
                .collect::<Vec<_>>()
                .join("\nLOG ")
        );
    }
    assert!(missing.is_empty(), "never published: {missing:#?}");
    let unknown: Vec<_> = ids.difference(&want).collect();
    assert!(unknown.is_empty(), "ids replay does not know: {unknown:?}");
    for e in first.values() {
        let id = e["id"].as_str().expect("id");
        let replayed = want_events.iter().find(|w| w["id"] == id).expect("known");
        // Not asserted: a bridge that missed a state may see a fact later than replay does.
        if replayed != e {
            eprintln!(
                "unlike replay: {} {}: {}",
                e["type"],
                e["subject"],
                differences(replayed, e)
            );
        }
        assert_eq!(
            (&e["type"], &e["subject"], &e["data"]["RunAttempt"]),
            (
                &replayed["type"],
                &replayed["subject"],
                &replayed["data"]["RunAttempt"]
            ),
            "id {id} is another fact than replay's"
        );
    }
    // Tombstoned before the first kill: the first attempt is never published again.
    let again: Vec<_> = per_output[1..]
        .iter()
        .flatten()
        .filter(|e| first_attempt.contains(e["id"].as_str().expect("id")))
        .map(|e| format!("{} {}", e["type"], e["subject"]))
        .collect();
    assert!(
        again.is_empty(),
        "the tombstoned first attempt published again: {again:?}"
    );
    // One run-terminal per attempt: the failed first, the succeeded second.
    let subject = run_failed[0]["subject"].as_str().expect("subject");
    let mut terminals = std::collections::BTreeMap::<(String, u64), Vec<String>>::new();
    for e in first.values().filter(|e| is_run_terminal(e)) {
        terminals
            .entry((
                e["subject"].as_str().expect("subject").to_owned(),
                attempt_of(e),
            ))
            .or_default()
            .push(e["type"].as_str().expect("type").to_owned());
    }
    assert_eq!(
        terminals,
        [
            (
                (subject.to_owned(), 1),
                vec!["org.kubeflow.pipelines.run.failed".to_owned()]
            ),
            (
                (subject.to_owned(), 2),
                vec!["org.kubeflow.pipelines.run.succeeded".to_owned()]
            ),
        ]
        .into_iter()
        .collect(),
        "one run-terminal per attempt"
    );
    eprintln!(
        "{} events over {} outputs for {} facts, {:?} in all; {} repeated: {duplicates:#?}",
        per_output.iter().map(Vec::len).sum::<usize>(),
        outputs.len(),
        want.len(),
        started.elapsed(),
        duplicates.len()
    );
    assert!(
        differ.is_empty(),
        "ids published again with other content: {differ:#?}"
    );
}

/// A Workflow whose status has a field of an unexpected type (`status.phase: 123`) in the first
/// list, and again as a MODIFIED: skipped with one warning naming it and counted; every other
/// workflow's facts are published and `/readyz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_workflow_is_skipped_and_the_watch_goes_on() {
    use support::bridge::{admin_addr, get, samples};
    let scratch = Scratch::new("live-malformed");
    let cluster = Cluster::start(&scratch).await;
    let mut good = final_states(&many_runs(1));
    // One good workflow has fields of an unexpected type the bridge can do without (a YAML
    // boolean as a label's value, a number as `status.progress`): they are dropped, not it.
    let odd = good
        .iter()
        .rposition(|l| l.contains("\"kind\":\"Workflow\"") && l.contains("\"phase\":\"Succeeded\""))
        .expect("a succeeded workflow");
    let mut v: serde_json::Value = serde_json::from_str(&good[odd]).expect("json");
    v["object"]["metadata"]["labels"]["example.com/yaml-born"] = true.into();
    v["object"]["status"]["progress"] = 5.into();
    let odd_name = v["object"]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    good[odd] = v.to_string();
    let want = replay_ids(&scratch, &good);
    let odd_facts = replay_ids(&scratch, &good[odd..=odd]);
    assert!(!odd_facts.is_empty() && odd_facts.is_subset(&want));
    let first_workflow = good
        .iter()
        .find(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["object"]["kind"]
                == "Workflow"
        })
        .expect("a workflow");
    let malformed = |message: &str| {
        let mut v: serde_json::Value = serde_json::from_str(first_workflow).expect("json");
        v["object"]["metadata"]["name"] = "malformed-wf".into();
        v["object"]["metadata"]["uid"] = "0bad0bad-0000-4000-8000-000000000bad".into();
        v["object"]["status"]["phase"] = 123.into();
        v["object"]["status"]["message"] = message.into();
        v.to_string()
    };
    // In the first list, between good workflows.
    let (before, after) = good.split_at(good.len() / 2);
    cluster.feed(before);
    cluster.feed(&[malformed("first")]);
    cluster.feed(after);
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    let addr = admin_addr(&mut bridge).await;
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    settle(
        &out,
        want.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    // And later as a change of that object, followed by a good workflow's change.
    cluster.feed(&[malformed("second")]);
    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let t0 = std::time::Instant::now();
    let errors = loop {
        let (_, text) = get(&addr, "/metrics").await;
        let errors = samples(&text)
            .get("kfp_event_bridge_decode_errors_total")
            .copied()
            .unwrap_or(0.0);
        if errors >= 2.0 || t0.elapsed() > Duration::from_secs(30) {
            break errors;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(errors, 2.0, "the list's copy and the MODIFIED one");
    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    sigterm(&bridge);
    let exit = wait(&mut bridge, Duration::from_secs(30)).await;
    let log = stderr(&mut bridge);
    assert!(exit.success(), "{log}");
    let ids: BTreeSet<String> = id_counts(&out).into_keys().collect();
    assert_eq!(
        ids, want,
        "every good workflow's facts, nothing of the bad one"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("object cannot be read"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("malformed-wf") && warnings[0].contains("invalid type"),
        "{}",
        warnings[0]
    );
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fields of an unexpected type dropped"))
        .collect();
    assert!(
        !dropped.is_empty()
            && dropped.iter().all(|l| l.contains(&odd_name)
                && l.contains("status.progress")
                && l.contains("example.com/yaml-born")),
        "{dropped:#?}"
    );
}

/// Every retried run (KFP v1, v2, terminated v2, Argo DAG, steps retried twice,
/// `--restart-successful`), each change played while the bridge watches: the same ids as `replay`,
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_runs_live_publish_what_replay_does() {
    let scratch = Scratch::new("live-retries");
    let lines: Vec<String> = support::retry_recordings()
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("recording")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    live_equals_replay(&scratch, &lines, Duration::from_secs(60)).await;
}
