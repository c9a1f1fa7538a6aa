//! The admin server: `/metrics` counts what was published, failed and dead-lettered (during a
//! replay and a live run), the KFP metrics equal hand-computed numbers, `/readyz` follows sinks
//! and watches, and the shipped alert rules and dashboard use only metrics the code exports.

use axum::Router;
use axum::http::StatusCode;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

use support::bridge::{
    BIN, Scratch, admin_addr, all_recordings, families, get, readyz_becomes, replayed, samples,
    spawn_logged, stderr, wait,
};
use support::live::{Cluster, count_lines, live_bridge, many_runs, sigterm, wait_for_log};

/// An HTTP receiver answering every request with `status`; dropped when the task is aborted.
async fn receiver(addr: &str, status: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind receiver");
    let status = StatusCode::from_u16(status).expect("status");
    let app = Router::new().fallback(move || async move { status });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Polls `/metrics` until `done` holds for its samples (at most 30 s); returns the text.
async fn scrape_until(addr: &str, done: impl Fn(&BTreeMap<String, f64>) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if done(&samples(&text)) {
            return text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "metrics never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz` answers `want` with `needle` in its body within `limit`: the body.
async fn readyz_until(addr: &str, want: u16, needle: &str, limit: Duration) -> String {
    readyz_becomes(addr, want, needle, limit).await.1
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:#?}", samples.keys()))
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_metrics_count_what_was_published_failed_and_dead_lettered() {
    let scratch = Scratch::new("obs-replay");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let refuser = free_port();
    let _refusing = receiver(&refuser, 400).await;
    let out = scratch.path("out.jsonl");
    let dead = scratch.path("dead.jsonl");
    // Standard input stays open until the test has scraped: the replay is still running.
    let mut child = spawn_logged(
        Command::new(BIN)
            .args(["--log-format", "json", "replay", "-", "--admin-addr"])
            .args(["127.0.0.1:0", "--health-interval", "200ms", "--sink"])
            .arg(format!("file:{}", out.display()))
            .arg("--sink")
            .arg(format!("http://{refuser}/?types=run.*&name=refuser"))
            .arg("--dead-letter")
            .arg(format!("file:{}", dead.display()))
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let addr = admin_addr(&mut child).await;
    let mut stdin = child.stdin.take().expect("stdin");
    if let Err(err) = stdin.write_all(&std::fs::read(&input).expect("input")) {
        panic!("feed: {err}: {}", stderr(&mut child));
    }
    stdin.flush().expect("flush");

    let runs = want
        .iter()
        .filter(|e| e["type"].as_str().unwrap_or("").contains(".run."))
        .count() as f64;
    let total = want.len() as f64;
    let file_sink = format!("sink=\"file:{}\"", out.display());
    let text = scrape_until(&addr, |s| {
        s.get(&format!(
            "kfp_event_bridge_events_published_total{{{file_sink}}}"
        )) == Some(&total)
            && s.get("kfp_event_bridge_events_dead_lettered_total{sink=\"refuser\"}") == Some(&runs)
    })
    .await;
    let s = samples(&text);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    // Per sink: routed, published, failed, dead-lettered, nothing lost or pending.
    let per_sink = |metric: &str, sink: &str| value(&s, &format!("{metric}{{{sink}}}"));
    for metric in ["routed", "published"] {
        assert_eq!(
            per_sink(
                &format!("kfp_event_bridge_events_{metric}_total"),
                &file_sink
            ),
            total
        );
    }
    let refuser_sink = "sink=\"refuser\"";
    assert_eq!(
        per_sink("kfp_event_bridge_events_routed_total", refuser_sink),
        runs
    );
    assert_eq!(
        per_sink("kfp_event_bridge_events_published_total", refuser_sink),
        0.0
    );
    assert_eq!(
        per_sink("kfp_event_bridge_events_failed_total", refuser_sink),
        runs
    );
    assert_eq!(
        per_sink("kfp_event_bridge_events_retried_total", refuser_sink),
        0.0
    );
    for sink in [file_sink.as_str(), refuser_sink] {
        assert_eq!(
            per_sink("kfp_event_bridge_events_undeliverable_total", sink),
            0.0
        );
        assert_eq!(per_sink("kfp_event_bridge_lane_depth", sink), 0.0);
        assert_eq!(
            per_sink("kfp_event_bridge_oldest_pending_seconds", sink),
            0.0
        );
    }
    // The latency histogram counts what the file sink acknowledged.
    assert_eq!(
        per_sink("kfp_event_bridge_publish_latency_seconds_count", &file_sink),
        total
    );
    assert_eq!(
        value(
            &s,
            &format!("kfp_event_bridge_publish_latency_seconds_bucket{{le=\"+Inf\",{file_sink}}}")
        ),
        total
    );
    // Facts by type: what replay publishes.
    let mut by_type: BTreeMap<String, f64> = BTreeMap::new();
    for e in &want {
        let ty = e["type"].as_str().expect("type");
        let suffix = ty.trim_start_matches("org.kubeflow.pipelines.");
        *by_type.entry(suffix.to_owned()).or_default() += 1.0;
    }
    for (suffix, n) in &by_type {
        assert_eq!(
            value(
                &s,
                &format!("kfp_event_bridge_facts_total{{type=\"{suffix}\"}}")
            ),
            *n,
            "{suffix}"
        );
    }
    assert_eq!(value(&s, "kfp_event_bridge_decode_errors_total"), 0.0);
    assert_eq!(value(&s, "kfp_event_bridge_offloaded_workflows_total"), 1.0);
    // A replay has no watches and no leader election: ready once the sinks answered.
    let body = readyz_until(&addr, 200, "", Duration::from_secs(10)).await;
    assert!(body.contains("sink refuser: ok"), "{body}");
    let (status, body) = get(&addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // KFP metrics, against numbers computed by hand from the recordings' final statuses
    // (finishedAt - startedAt). nightly-etl was deleted unseen and is known only from its
    // Events: counted, but without a status there are no start and end times to time it by.
    let runs_by: [(&str, &str, &str, Option<f64>); 11] = [
        ("argo", "", "succeeded", Some(26.0)),
        ("kubeflow", "tacos-vs-burritos", "succeeded", Some(80.0)),
        ("kubeflow-user", "batch-score", "succeeded", Some(76.0)),
        ("kubeflow-user", "llm-eval", "terminated", Some(401.0)),
        ("kubeflow-user", "embeddings-build", "failed", Some(302.0)),
        ("kubeflow-user", "daily-report", "succeeded", Some(52.0)),
        ("kubeflow-user", "fraud-detector", "failed", Some(122.0)),
        ("kubeflow-user", "iris-training", "succeeded", Some(130.0)),
        ("kubeflow-user", "gpu-finetune", "succeeded", Some(902.0)),
        ("kubeflow-user", "big-sweep", "succeeded", Some(72.0)),
        ("kubeflow-user", "", "failed", None),
    ];
    for (namespace, pipeline, outcome, seconds) in runs_by {
        let labels =
            format!("namespace=\"{namespace}\",outcome=\"{outcome}\",pipeline=\"{pipeline}\"");
        assert_eq!(
            value(&s, &format!("kfp_runs_finished_total{{{labels}}}")),
            1.0,
            "{labels}"
        );
        let sum = s
            .get(&format!("kfp_run_duration_seconds_sum{{{labels}}}"))
            .copied();
        assert_eq!(sum, seconds, "{labels}");
    }
    let total_of = |prefix: &str| -> f64 {
        s.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total_of("kfp_runs_finished_total{"), 11.0);
    // Tasks: every terminal task event is one finished attempt; cached ones say so.
    let cached = want
        .iter()
        .filter(|e| {
            e["type"] == "org.kubeflow.pipelines.task.succeeded" && e["data"]["Cached"] == true
        })
        .count() as f64;
    assert_eq!(
        total_of("kfp_tasks_finished_total{"),
        by_type["task.succeeded"] + by_type["task.failed"] + by_type["task.skipped"]
    );
    let outcome_total = |outcome: &str| -> f64 {
        s.iter()
            .filter(|(k, _)| {
                k.starts_with("kfp_tasks_finished_total{")
                    && k.contains(&format!("outcome=\"{outcome}\""))
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(outcome_total("cached"), cached);
    assert_eq!(outcome_total("failed"), by_type["task.failed"]);
    assert_eq!(outcome_total("skipped"), by_type["task.skipped"]);
    assert_eq!(
        total_of("kfp_task_lifecycle_warnings_total{"),
        by_type["task.warning"]
    );
    let retried = want
        .iter()
        .filter(|e| {
            e["type"] == "org.kubeflow.pipelines.task.started"
                && e["data"]["Attempt"].as_u64().is_some_and(|a| a > 0)
        })
        .count() as f64;
    assert!(retried > 0.0, "the recordings have retries");
    assert_eq!(total_of("kfp_task_retries_total{"), retried);

    drop(stdin);
    let status = wait(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut child));
    // Each run event was dead-lettered once.
    assert_eq!(count_lines(&dead), runs as usize);
}

/// A run that fails, is retried and succeeds: one finished attempt per outcome, each timed from
/// its own start, and one run retry.
#[tokio::test(flavor = "multi_thread")]
async fn replay_metrics_count_each_attempt_of_a_retried_run() {
    let input = support::recordings_dir().join("retries/kfp-v1.jsonl");
    let mut child = spawn_logged(
        Command::new(BIN)
            .args(["--log-format", "json", "replay", "-", "--admin-addr"])
            .args(["127.0.0.1:0", "--sink", "file:/dev/null"])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let addr = admin_addr(&mut child).await;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&std::fs::read(&input).expect("input"))
        .expect("feed");
    stdin.flush().expect("flush");
    let labels = |outcome: &str| {
        format!("namespace=\"kubeflow\",outcome=\"{outcome}\",pipeline=\"resubmit\"")
    };
    let succeeded = format!("kfp_runs_finished_total{{{}}}", labels("succeeded"));
    let text = scrape_until(&addr, |s| s.contains_key(&succeeded)).await;
    let s = samples(&text);
    assert_eq!(value(&s, &succeeded), 1.0);
    assert_eq!(
        value(
            &s,
            &format!("kfp_runs_finished_total{{{}}}", labels("failed"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "kfp_run_retries_total{namespace=\"kubeflow\",pipeline=\"resubmit\"}"
        ),
        1.0
    );
    // The first attempt ran 09:00:00–09:00:22; the retry from that end to 09:05:19.
    let duration = |outcome: &str| {
        value(
            &s,
            &format!("kfp_run_duration_seconds_sum{{{}}}", labels(outcome)),
        )
    };
    assert_eq!(duration("failed"), 22.0);
    assert_eq!(duration("succeeded"), 297.0);
    drop(stdin);
    let status = wait(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut child));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_metrics_and_readiness_follow_watches_and_sinks() {
    let scratch = Scratch::new("obs-live");
    let cluster = Cluster::start(&scratch).await;
    let hook = free_port();
    let receiving = receiver(&hook, 202).await;
    let dlq = free_port();
    let dead_letter = receiver(&dlq, 202).await;
    let out = scratch.path("out.jsonl");
    // Started while the API server refuses everything: not ready, the watches named.
    cluster.api.set_unavailable(true);
    let mut bridge = live_bridge(
        &cluster,
        &out,
        &scratch.path("state"),
        &[
            "--health-interval",
            "300ms",
            "--sink",
            &format!("http://{hook}/?name=hook"),
            "--dead-letter",
            &format!("http://{dlq}/"),
        ],
    );
    let addr = admin_addr(&mut bridge).await;
    readyz_until(
        &addr,
        503,
        "FAIL watch workflows (all namespaces): ",
        Duration::from_secs(5),
    )
    .await;
    wait_for_log(&mut bridge, "watch failed", Duration::from_secs(10)).await;
    let body = readyz_until(&addr, 503, "failing", Duration::from_secs(5)).await;
    assert!(
        body.contains("FAIL watch workflows (all namespaces): failing: "),
        "{body}"
    );
    cluster.api.set_unavailable(false);
    wait_for_log(&mut bridge, "watch synced", Duration::from_secs(60)).await;
    let body = readyz_until(&addr, 200, "", Duration::from_secs(10)).await;
    assert!(
        body.contains("watch workflows (all namespaces): synced"),
        "{body}"
    );
    assert!(body.contains("sink hook: ok"), "{body}");

    let lines = many_runs(1);
    support::live::write_recording(&scratch.path("rec.jsonl"), &lines);
    let expected = replayed(&scratch.path("rec.jsonl")).len() as f64;
    cluster.feed(&lines);
    let file_sink = format!("sink=\"file:{}\"", out.display());
    let text = scrape_until(&addr, |s| {
        s.get(&format!(
            "kfp_event_bridge_events_published_total{{{file_sink}}}"
        )) == Some(&expected)
            && s.get("kfp_event_bridge_events_published_total{sink=\"hook\"}") == Some(&expected)
    })
    .await;
    let s = samples(&text);
    let facts: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("kfp_event_bridge_facts_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(facts, expected, "every fact derived once");
    assert_eq!(
        value(
            &s,
            "kfp_event_bridge_watch_up{namespace=\"\",resource=\"workflows\"}"
        ),
        1.0
    );
    assert_eq!(value(&s, "kfp_event_bridge_role{role=\"single\"}"), 1.0);
    assert!(value(&s, "kfp_event_bridge_checkpoint_writes_total") >= 1.0);
    // Nothing here reaches the duplicate bound: no wait for the checkpoint, exported as zero.
    assert_eq!(value(&s, "kfp_event_bridge_checkpoint_waits_total"), 0.0);
    assert_eq!(
        value(&s, "kfp_event_bridge_checkpoint_wait_seconds_total"),
        0.0
    );
    assert_eq!(value(&s, "kfp_event_bridge_sink_up{sink=\"hook\"}"), 1.0);

    // The receiver goes away: not ready within the health interval (and a bit), naming it.
    receiving.abort();
    let _ = receiving.await;
    let t0 = Instant::now();
    let body = readyz_until(&addr, 503, "sink hook", Duration::from_secs(3)).await;
    println!("sink down seen after {:?}", t0.elapsed());
    assert!(body.contains("FAIL sink hook: "), "{body}");
    let (_, text) = get(&addr, "/metrics").await;
    assert_eq!(
        value(&samples(&text), "kfp_event_bridge_sink_up{sink=\"hook\"}"),
        0.0
    );
    let _back = receiver(&hook, 202).await;
    let body = readyz_until(&addr, 200, "", Duration::from_secs(3)).await;
    assert!(body.contains("sink hook: ok"), "{body}");

    // So does the dead-letter sink: without it a failing event would be lost.
    let dlq_sink = format!("dead-letter sink http://{dlq}/");
    assert!(body.contains(&format!("{dlq_sink}: ok")), "{body}");
    dead_letter.abort();
    let _ = dead_letter.await;
    let body = readyz_until(&addr, 503, "dead-letter", Duration::from_secs(3)).await;
    assert!(body.contains(&format!("FAIL {dlq_sink}: ")), "{body}");
    let (_, text) = get(&addr, "/metrics").await;
    let up = format!("kfp_event_bridge_dead_letter_sink_up{{sink=\"http://{dlq}/\"}}");
    assert_eq!(value(&samples(&text), &up), 0.0);
    let _dead_letter_back = receiver(&dlq, 202).await;
    let body = readyz_until(&addr, 200, "", Duration::from_secs(3)).await;
    assert!(body.contains(&format!("{dlq_sink}: ok")), "{body}");

    // The API server refuses everything: the watches fail, not ready, naming them.
    cluster.api.set_unavailable(true);
    let t0 = Instant::now();
    let body = readyz_until(&addr, 503, "watch", Duration::from_secs(30)).await;
    println!("watch failure seen after {:?}", t0.elapsed());
    assert!(
        body.contains("FAIL watch workflows (all namespaces): failing"),
        "{body}"
    );
    let (_, text) = get(&addr, "/metrics").await;
    let s = samples(&text);
    assert!(
        value(
            &s,
            "kfp_event_bridge_watch_restarts_total{namespace=\"\",resource=\"workflows\"}"
        ) >= 1.0
    );
    cluster.api.set_unavailable(false);
    // Back: the next objects the watches deliver make it ready again.
    let again = many_runs(1);
    cluster.feed(&again[..4]);
    readyz_until(&addr, 200, "", Duration::from_secs(40)).await;

    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut bridge));
}

/// Every metric the alert rules and the dashboard use is one the code exports (rendered with
/// every family populated: the bundled recordings' facts, a pod start, a watch and a sink).
#[test]
fn alert_rules_and_dashboard_use_exported_metrics_only() {
    use kfp_event_bridge::derive::{DeriveConfig, Deriver, PodStart};
    use kfp_event_bridge::pipeline::LaneStats;
    use kfp_event_bridge::source::live::WatchId;
    use kfp_event_bridge::source::recording;
    use std::sync::Arc;

    let exposition = kfp_event_bridge::admin::Exposition::new(100);
    let metrics = &exposition.metrics;
    let mut deriver = Deriver::new(DeriveConfig::default());
    for path in support::recordings() {
        for line in std::fs::read_to_string(path).expect("recording").lines() {
            if let Ok(Some(observed)) = recording::decode(line.as_bytes()) {
                metrics.facts(&deriver.observe(&observed));
            }
        }
    }
    let now = chrono::Utc::now();
    let start = PodStart {
        run: Arc::default(),
        created: now,
    };
    metrics.pod_starts(&[start], now);
    metrics.watches(&[WatchId {
        resource: "workflows",
        namespace: String::new(),
    }]);
    exposition
        .sinks
        .sinks(&[("hook".to_owned(), Arc::new(LaneStats::default()))]);
    let text = exposition.render();
    let exported = families(&text);
    for family in [
        "kfp_event_bridge_events_published",
        "kfp_event_bridge_watch_up",
        "kfp_task_pending_seconds",
        "kfp_task_lifecycle_warnings",
    ] {
        assert!(exported.contains(family), "{family} in {exported:?}");
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("alerts.yaml")).expect("alerts.yaml"),
    )
    .expect("alert rules are YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(rule["alert"].as_str().is_some(), "every rule is an alert");
            assert!(rule["annotations"]["summary"].as_str().is_some());
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("dashboard.json")).expect("dashboard.json"),
    )
    .expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{} expressions", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("kfp_") {
                used.insert(word.to_owned());
            }
        }
    }
    let mut unknown = Vec::new();
    for name in &used {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        if !exported.contains(family) {
            unknown.push(name.clone());
        }
    }
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    // Counters are used with their `_total` suffix, as Prometheus stores them.
    for name in &used {
        assert!(
            !text.contains(&format!("# TYPE {name} counter")),
            "{name} is a counter: use {name}_total"
        );
    }
}
