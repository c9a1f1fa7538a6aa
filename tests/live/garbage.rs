//! Garbage from the API server (or from what stands in front of it: a proxy, a load balancer) in
//! place of a watch's or a list's answer: the watch recovers, workflows created afterwards keep
//! flowing, each failure is logged and counted once, and nothing is published twice.

use crate::support;

use fake_apiserver::{Garbage, Kind};
use serde_json::json;
use std::time::Duration;
use support::bridge::{Scratch, admin_addr, get, stderr, wait};
use support::live::*;

/// `kfp_event_bridge_watch_restarts_total` of the all-namespaces workflow watch.
async fn workflow_watch_restarts(addr: &str) -> f64 {
    let (_, text) = get(addr, "/metrics").await;
    let key = r#"kfp_event_bridge_watch_restarts_total{resource="workflows",namespace=""} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}in {text}"))
}

/// Whether `out` holds the `run.started` event of workflow `name`.
fn run_started(out: &std::path::Path, name: &str) -> bool {
    support::bridge::read_events(out).iter().any(|e| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("run.started"))
            && e["workflow"] == name
    })
}

/// Waits for workflow `name`'s `run.started` in `out`, at most `limit` after `since`; fails
/// saying `what` (with the log) past it, or at once if the bridge exits.
async fn wait_run_started(
    bridge: &mut std::process::Child,
    out: &std::path::Path,
    name: &str,
    since: std::time::Instant,
    limit: Duration,
    what: &str,
) {
    while !run_started(out, name) {
        if let Some(status) = bridge.try_wait().expect("try_wait") {
            panic!("{what}: the bridge exited ({status}): {}", stderr(bridge));
        }
        assert!(
            since.elapsed() < limit,
            "{what}: {name} never arrived: {}",
            stderr(bridge)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of the bridge's log that say the workflow watch failed.
fn failure_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("watch failed; retrying with backoff") && l.contains("workflows"))
        .count()
}

/// Each kind of garbage once, in turn, while the bridge watches: an HTML 502 page for the watch
/// and for the re-list after a 410, a watch chunk cut in the middle of an object, a line that
/// is not JSON, an `ERROR` event carrying a 500 Status, and an `ERROR` event carrying no Status
/// at all. After each, a new workflow's `run.started` arrives; each failure the watcher saw is
/// one warning and one count of `watch_restarts_total`; in the end every fact is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_place_of_a_watch_or_a_list_is_survived() {
    let scratch = Scratch::new("live-garbage");
    let cluster = Cluster::start(&scratch).await;
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    let addr = admin_addr(&mut bridge).await;
    let cases = [
        ("an HTML 502 page for the watch", true, Garbage::Html502),
        ("an HTML 502 page for the re-list", false, Garbage::Html502),
        ("a watch chunk cut mid-object", true, Garbage::Truncated),
        ("a line that is not JSON", true, Garbage::NotJson),
        (
            "an ERROR event with a 500 Status",
            true,
            Garbage::Error(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
            })),
        ),
        (
            "an ERROR event that is no Status",
            true,
            Garbage::Error(json!({"unexpected": [1, 2, 3]})),
        ),
    ];
    let mut arrived = Vec::new();
    for (i, (what, watch, garbage)) in cases.into_iter().enumerate() {
        let restarts = workflow_watch_restarts(&addr).await;
        let warnings = failure_lines(&stderr(&mut bridge));
        cluster.api.garbage(Kind::Workflow, watch, garbage);
        if !watch {
            // A list comes only with a re-list.
            cluster.api.force_410();
        }
        let t0 = std::time::Instant::now();
        while cluster.api.garbage_queued() > 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{what}: never requested"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let name = format!("after-garbage-{i}");
        cluster.api.apply(fake_apiserver::synthetic::workflow(
            "team-a", &name, &uid, 1,
        ));
        let t0 = std::time::Instant::now();
        let limit = Duration::from_secs(60);
        wait_run_started(&mut bridge, &out, &name, t0, limit, what).await;
        let took = t0.elapsed();
        let restarted = workflow_watch_restarts(&addr).await - restarts;
        let warned = failure_lines(&stderr(&mut bridge)) - warnings;
        eprintln!("{what}: next workflow after {took:?}; {restarted} restarts, {warned} warnings");
        assert_eq!(
            restarted, warned as f64,
            "{what}: each failure logged once and counted once"
        );
        // A cut chunk is the end of a watch to the client (it resumes from its last version, and
        // the object cut was one it had); everything else is a failure, seen and said.
        if !matches!(what, "a watch chunk cut mid-object") {
            assert!(restarted >= 1.0, "{what}: no failure counted");
        }
        arrived.push((what, restarted));
    }
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    let counts = id_counts(&out);
    assert!(counts.values().all(|n| *n == 1), "an id twice");
    // Each failure in one readable line: an error page's line breaks collapsed, its length
    // capped, an ERROR event without a Status said to be one.
    let log = stderr(&mut bridge);
    let errors: Vec<String> = log
        .lines()
        .filter(|l| l.contains("watch failed"))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json log line");
            v["fields"]["error"].as_str().expect("error").to_owned()
        })
        .collect();
    for error in &errors {
        eprintln!("{error}");
        assert!(!error.contains(['\r', '\n']), "{error:?}");
        assert!(error.chars().count() <= 330, "{error:?}");
    }
    assert!(
        errors.iter().any(|e| e.contains("502 Bad Gateway")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("watch ERROR event without a readable Status")),
        "{errors:?}"
    );
    eprintln!("{arrived:?}");
}

/// A watch that never sends a byte (headers, then silence: a proxy holding a dead upstream) is
/// taken for dead after `--watch-timeout` and 5 s more and started again; a workflow created
/// meanwhile then arrives. kube-runtime's watcher ends such a stream as it ends one the server
/// closed (at debug level), so this is a reconnect, not a failure: not counted as a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_never_sends_a_byte_is_started_again() {
    let scratch = Scratch::new("live-silent");
    let cluster = Cluster::start(&scratch).await;
    let out = scratch.path("out.jsonl");
    let extra = ["--watch-timeout", "3s"];
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    let watches = || {
        cluster
            .api
            .requests()
            .get("GET /apis/argoproj.io/v1alpha1/workflows?watch")
            .copied()
            .unwrap_or(0)
    };
    cluster.api.garbage(Kind::Workflow, true, Garbage::Silent);
    let t0 = std::time::Instant::now();
    while cluster.api.garbage_queued() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "never requested");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent_from = std::time::Instant::now();
    let before = watches();
    cluster.api.apply(fake_apiserver::synthetic::workflow(
        "team-a",
        "during-silence",
        "00000000-0000-4000-8000-00000000cafe",
        1,
    ));
    let limit = Duration::from_secs(40);
    let what = "the silent watch was never given up";
    wait_run_started(
        &mut bridge,
        &out,
        "during-silence",
        silent_from,
        limit,
        what,
    )
    .await;
    let took = silent_from.elapsed();
    eprintln!("arrived {took:?} after the silent watch began");
    assert!(
        took >= Duration::from_secs(3),
        "{took:?}: it came through another way than the silent watch's restart"
    );
    assert!(watches() > before, "a new watch request was made");
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    assert!(id_counts(&out).values().all(|n| *n == 1), "an id twice");
}

/// Peak RSS of a process, from `/proc/PID/status` (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A 100 MiB Workflow (a real API server refuses objects past etcd's 1.5 MiB request limit; a
/// proxy or a broken server may not): the bridge survives it, the workflows after it flow. Not
/// yet bounded: reading it takes about 4.4 times its size (kube buffers the watch line, then the
/// projection reads a JSON tree; 33.9 → 444.3 MiB peak measured), more than the chart's 256 MiB
/// limit — the assertion below keeps it from growing further unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_object_is_survived() {
    let scratch = Scratch::new("live-huge");
    let cluster = Cluster::start(&scratch).await;
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &[]);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    let before = peak_rss_mib(bridge.id());
    let mut huge = fake_apiserver::synthetic::workflow(
        "team-a",
        "huge",
        "00000000-0000-4000-8000-0000000000ff",
        1,
    );
    huge["metadata"]["annotations"] = json!({"filler": "x".repeat(100 * 1024 * 1024)});
    cluster.api.apply(huge);
    cluster.api.apply(fake_apiserver::synthetic::workflow(
        "team-a",
        "after-huge",
        "00000000-0000-4000-8000-000000000100",
        1,
    ));
    let t0 = std::time::Instant::now();
    let limit = Duration::from_secs(60);
    let what = "the workflow after the huge one";
    wait_run_started(&mut bridge, &out, "after-huge", t0, limit, what).await;
    let peak = peak_rss_mib(bridge.id());
    assert!(
        peak - before < 600.0,
        "peak RSS {before:.1} → {peak:.1} MiB"
    );
    eprintln!(
        "peak RSS {before:.1} → {peak:.1} MiB; the huge one published: {}; after {:?}",
        run_started(&out, "huge"),
        t0.elapsed()
    );
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
}

/// The API server unavailable (503 to everything) when the bridge starts with a ConfigMap
/// checkpoint: the load is retried, not the end of the process (which in a pod would be a
/// restart with kubelet's growing back-off); once the server answers, the checkpoint loads,
/// the watches sync and a workflow's events flow. A SIGTERM while it waits is a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_checkpoint_waits_for_an_unavailable_api_server_at_start() {
    let scratch = Scratch::new("live-cm-unavailable");
    let cluster = Cluster::start(&scratch).await;
    let out = scratch.path("out.jsonl");
    let extra = [
        "--checkpoint",
        "configmap:kubeflow/kfp-event-bridge-checkpoint",
    ];
    cluster.api.set_unavailable(true);
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_for_log(
        &mut bridge,
        "checkpoint cannot be loaded yet",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        bridge.try_wait().expect("try_wait").is_none(),
        "the bridge exited while the API server was unavailable: {}",
        stderr(&mut bridge)
    );
    cluster.api.set_unavailable(false);
    let since = std::time::Instant::now();
    cluster.api.apply(fake_apiserver::synthetic::workflow(
        "team-a",
        "after-the-outage",
        "00000000-0000-4000-8000-00000000beef",
        1,
    ));
    wait_run_started(
        &mut bridge,
        &out,
        "after-the-outage",
        since,
        Duration::from_secs(30),
        "after the API server came back",
    )
    .await;
    // Waiting again at start, then SIGTERM: a clean stop (exit 0), not a failure.
    sigterm(&bridge);
    assert!(wait(&mut bridge, Duration::from_secs(30)).await.success());
    cluster.api.set_unavailable(true);
    let mut again = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_for_log(
        &mut again,
        "checkpoint cannot be loaded yet",
        Duration::from_secs(20),
    )
    .await;
    sigterm(&again);
    let status = wait(&mut again, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {}", stderr(&mut again));
}
