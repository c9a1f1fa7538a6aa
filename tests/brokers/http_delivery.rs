//! The binary delivering to real HTTP receivers on 127.0.0.1: a receiver down for 60 s then back
//! (nothing lost, nothing twice, runs in order, the other sink unaffected), a receiver that
//! refuses everything (dead letter), signals, the kfp-event-handler subscriber directory, Knative's
//! environment and the config file.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;

use support::bridge::{
    BIN, Scratch, all_recordings, assert_same_as_replay, bridge, cdevents_short_type, expected,
    read_events, replayed, replayed_with, run_ok, stderr, summaries, wait,
};

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    id: String,
    key: String,
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    status: u16,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }
}

async fn handle(
    State(rx): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    rx.hits.lock().expect("lock").push(Hit {
        path: uri.path().to_owned(),
        id: header("ce-id"),
        key: header("ce-partitionkey"),
        at: Instant::now(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    StatusCode::from_u16(rx.status).expect("status")
}

/// Serves on `listener`, answering `status` to everything.
fn serve(listener: std::net::TcpListener, status: u16) -> Receiver {
    let rx = Receiver {
        hits: Arc::default(),
        status,
    };
    let app = Router::new().fallback(handle).with_state(rx.clone());
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move { axum::serve(listener, app).await });
    rx
}

fn bind() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
}

fn url(listener: &std::net::TcpListener, path: &str) -> String {
    format!("http://{}{path}", listener.local_addr().expect("addr"))
}

fn assert_exactly_once_in_run_order(hits: &[Hit], want: &[(String, String)]) {
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event arrived twice");
    assert_eq!(
        unique,
        want.iter()
            .map(|(id, _)| id.as_str())
            .collect::<BTreeSet<_>>(),
        "events missing"
    );
    let mut got: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in hits {
        got.entry(&h.key).or_default().push(&h.id);
    }
    let mut exp: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, key) in want {
        exp.entry(key).or_default().push(id);
    }
    assert_eq!(got, exp, "a run's events arrived out of order");
}

/// A request as the structured event: in structured mode its body; in binary mode rebuilt from
/// the `ce-` headers (percent-decoded), `Content-Type` as `datacontenttype` and the body as data.
fn event_of(hit: &Hit, structured: bool) -> serde_json::Value {
    let content_type = hit.headers["content-type"].to_str().expect("content-type");
    if structured {
        assert_eq!(content_type, "application/cloudevents+json; charset=utf-8");
        assert!(hit.headers.keys().all(|k| !k.as_str().starts_with("ce-")));
        return serde_json::from_slice(&hit.body).expect("structured JSON");
    }
    let mut event = serde_json::json!({
        "datacontenttype": content_type,
        "data": serde_json::from_slice::<serde_json::Value>(&hit.body).expect("data"),
    });
    for (name, value) in &hit.headers {
        if let Some(attribute) = name.as_str().strip_prefix("ce-") {
            let value = percent_encoding::percent_decode(value.as_bytes())
                .decode_utf8()
                .expect("utf8");
            event[attribute] = value.into_owned().into();
        }
    }
    event
}

/// CDEvents through both modes to paths by `{type}` (the CDEvent's `subject.predicate`): each
/// path's requests rebuilt are replay's CDEvents, each once, runs in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdevents_in_binary_and_structured_mode_equal_replays_cdevents() {
    let scratch = Scratch::new("http-cdevents");
    let input = all_recordings(&scratch);
    let want = replayed_with(&input, &["--format", "cdevents"]);
    let listener = bind();
    let base = url(&listener, "");
    let rx = serve(listener, 200);
    run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &format!("{base}/binary/{{type}}?mode=binary&format=cdevents"),
            "--sink",
            &format!("{base}/structured/{{type}}?mode=structured&format=cdevents"),
        ],
        &[],
    )
    .await;
    let hits = rx.hits();
    for mode in ["binary", "structured"] {
        let prefix = format!("/{mode}/");
        let mut events = Vec::new();
        for hit in hits.iter().filter(|h| h.path.starts_with(&prefix)) {
            let event = event_of(hit, mode == "structured");
            let ty = event["type"].as_str().expect("type");
            assert_eq!(hit.path, format!("{prefix}{}", cdevents_short_type(ty)));
            events.push(event);
        }
        let finished = format!("{prefix}taskrun.finished");
        assert!(hits.iter().any(|h| h.path == finished), "{finished}");
        assert_same_as_replay(&events, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_60_s_gets_everything_once_in_order_and_the_other_lane_is_unaffected() {
    let scratch = Scratch::new("outage");
    let input = all_recordings(&scratch);
    let want = expected(&input);
    let input = input.display().to_string();

    // Baseline: both receivers up.
    let (a, b) = (bind(), bind());
    let (a_url, b_url) = (url(&a, "/healthy"), url(&b, "/flaky"));
    let (_ra, _rb) = (serve(a, 202), serve(b, 202));
    let mut child = bridge(&["replay", &input, "--sink", &a_url, "--sink", &b_url], &[]);
    assert!(wait(&mut child, Duration::from_secs(60)).await.success());
    let baseline = summaries(&stderr(&mut child));
    let baseline_p99 = baseline[&a_url]["p99_ms"].as_f64().expect("p99");

    // Now the second receiver is down for 60 s: connections refused.
    let healthy = bind();
    let healthy_url = url(&healthy, "/healthy");
    let healthy_rx = serve(healthy, 202);
    let reserved = bind();
    let flaky_url = url(&reserved, "/flaky");
    let flaky_addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let started = Instant::now();
    let mut child = bridge(
        &[
            "replay",
            &input,
            "--sink",
            &healthy_url,
            "--sink",
            &flaky_url,
            "--retry-max",
            "2s",
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        child.try_wait().expect("poll").is_none(),
        "bridge must wait for the receiver"
    );
    let flaky_rx = serve(
        std::net::TcpListener::bind(flaky_addr).expect("rebind"),
        202,
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    let log = stderr(&mut child);
    assert!(status.success(), "exit {status:?}\n{log}");

    assert_exactly_once_in_run_order(&flaky_rx.hits(), &want);
    let healthy_hits = healthy_rx.hits();
    assert_exactly_once_in_run_order(&healthy_hits, &want);
    let last = healthy_hits.iter().map(|h| h.at).max().expect("hits");
    assert!(
        last.duration_since(started) < Duration::from_secs(10),
        "the healthy sink waited for the broken one: last event after {:?}",
        last.duration_since(started)
    );
    let sums = summaries(&log);
    let p99 = sums[&healthy_url]["p99_ms"].as_f64().expect("p99");
    assert!(
        p99 <= (baseline_p99 * 3.0).max(baseline_p99 + 25.0),
        "healthy p99 {p99} ms during the outage vs {baseline_p99} ms normally"
    );
    assert!(sums[&flaky_url]["retried"].as_u64().expect("retried") > 0);
    assert_eq!(
        sums[&flaky_url]["delivered"].as_u64(),
        Some(want.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_everything_fills_the_dead_letter_file_and_the_rest_flows() {
    let scratch = Scratch::new("dead-letter");
    let input = all_recordings(&scratch);
    let want = expected(&input);
    let refusing = bind();
    let refusing_url = url(&refusing, "/picky");
    let refusing_rx = serve(refusing, 400);
    let fine = bind();
    let fine_url = url(&fine, "/fine");
    let fine_rx = serve(fine, 200);
    let dead = scratch.path("dead.jsonl");
    let log = run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &refusing_url,
            "--sink",
            &fine_url,
            "--dead-letter",
            &format!("file:{}", dead.display()),
        ],
        &[],
    )
    .await;
    // Each refused once (a 400 is not retried), all dead-lettered with the reason.
    assert_eq!(refusing_rx.hits().len(), want.len());
    assert_exactly_once_in_run_order(&fine_rx.hits(), &want);
    let lines = read_events(&dead);
    assert_eq!(lines.len(), want.len());
    for line in &lines {
        let reason = line["deadletterreason"].as_str().expect("reason");
        assert!(reason.contains("HTTP 400 Bad Request"), "{reason}");
        assert_eq!(line["deadlettersink"], refusing_url.as_str());
    }
    let sums = summaries(&log);
    assert_eq!(
        sums[&refusing_url]["failed"].as_u64(),
        Some(want.len() as u64)
    );
    assert_eq!(
        sums[&refusing_url]["dead_lettered"].as_u64(),
        Some(want.len() as u64)
    );
    assert_eq!(sums[&refusing_url]["retried"].as_u64(), Some(0));

    // Once the receiver is fixed, `resend` publishes the dead letters again, as they were.
    let fixed = bind();
    let fixed_url = url(&fixed, "/fixed");
    let fixed_rx = serve(fixed, 200);
    let mut child = bridge(
        &["resend", &dead.display().to_string(), "--sink", &fixed_url],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    assert!(status.success(), "{}", stderr(&mut child));
    let resent = fixed_rx.hits();
    assert_exactly_once_in_run_order(&resent, &want);
    assert!(
        resent
            .iter()
            .all(|h| !h.headers.contains_key("ce-deadletterreason")
                && !h.headers.contains_key("ce-deadlettersink")),
        "dead-letter marks are not sent again"
    );

    // Without a dead-letter sink the same failures are logged, counted, and the exit code says so.
    let mut child = bridge(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &refusing_url,
        ],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    let log = stderr(&mut child);
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(log.contains("no --dead-letter sink configured"));
    assert_eq!(
        summaries(&log)[&refusing_url]["undeliverable"].as_u64(),
        Some(want.len() as u64)
    );
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_up_to_the_shutdown_timeout_and_a_second_signal_exits_at_once() {
    let scratch = Scratch::new("signals");
    let input = all_recordings(&scratch).display().to_string();
    let nowhere = {
        let l = bind();
        url(&l, "/")
    };
    let mut child = bridge(
        &[
            "replay",
            &input,
            "--sink",
            &nowhere,
            "--shutdown-timeout",
            "1s",
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    let t0 = Instant::now();
    let status = wait(&mut child, Duration::from_secs(10)).await;
    let waited = t0.elapsed();
    let log = stderr(&mut child);
    assert_eq!(status.code(), Some(4), "pending events are reported: {log}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(summaries(&log)[&nowhere]["pending"].as_u64() > Some(0));

    let mut child = bridge(
        &[
            "replay",
            &input,
            "--sink",
            &nowhere,
            "--shutdown-timeout",
            "60s",
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    let status = wait(&mut child, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_directory_and_knative_environment() {
    let scratch = Scratch::new("subscribers");
    let recv = bind();
    let base = url(&recv, "");
    let rx = serve(recv, 200);
    let dir = scratch.path("subscribers");
    std::fs::create_dir_all(dir.join("..2026_11_23")).expect("dirs");
    std::fs::write(dir.join("teams-notifier"), format!("  {base}/notify\n")).expect("file");
    std::fs::write(dir.join(".hidden"), "http://127.0.0.1:9/never").expect("file");
    let input = format!(
        "{}/examples/recordings/kfp-v1-success.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let want = expected(Path::new(&input));
    let mut child = bridge(
        &[
            "replay",
            &input,
            "--subscribers-dir",
            &dir.display().to_string(),
        ],
        &[
            ("K_SINK", &format!("{base}/ksink")),
            ("K_CE_OVERRIDES", r#"{"extensions":{"cluster":"east"}}"#),
        ],
    );
    let status = wait(&mut child, Duration::from_secs(30)).await;
    let log = stderr(&mut child);
    assert!(status.success(), "{log}");
    let hits = rx.hits();
    let notify: Vec<&Hit> = hits.iter().filter(|h| h.path == "/notify").collect();
    let ksink: Vec<&Hit> = hits.iter().filter(|h| h.path == "/ksink").collect();
    // kfp-event-handler forwarded Argo's Events: its subscribers get no `run.queued`, K_SINK
    // gets every event.
    let queued = replayed(Path::new(&input))
        .iter()
        .filter(|e| e["type"] == "org.kubeflow.pipelines.run.queued")
        .count();
    assert_eq!(queued, 1);
    assert_eq!(notify.len(), want.len() - queued);
    assert_eq!(ksink.len(), want.len());
    for hit in notify {
        // kfp-event-handler's subscribers read a JSON body with its five members.
        assert_eq!(hit.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&hit.body).expect("json");
        for member in [
            "KfpRunId",
            "WorkflowName",
            "NodeName",
            "EventType",
            "Message",
        ] {
            assert!(body.get(member).is_some(), "{member} missing");
        }
        assert_ne!(body["EventType"], "WorkflowPending");
        assert_eq!(hit.headers["ce-cluster"], "east");
    }
    assert!(summaries(&log).contains_key("subscriber/teams-notifier"));
    assert!(summaries(&log).contains_key("K_SINK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_routes_by_filter_and_bad_config_names_the_sink_and_field() {
    let scratch = Scratch::new("config");
    let recv = bind();
    let base = url(&recv, "");
    let rx = serve(recv, 200);
    let config = scratch.path("bridge.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  - uri: {base}/runs/{{namespace}}\n    name: run-events\n    types: [\"run.*\"]\n    options:\n      mode: structured\n      header: [\"X-Team: data\"]\n  - uri: {base}/failures\n    types: [\"*.failed\"]\nretry:\n  initial: 50ms\n"
        ),
    )
    .expect("config");
    let input = all_recordings(&scratch);
    let mut child = bridge(
        &[
            "replay",
            &input.display().to_string(),
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(30)).await;
    let log = stderr(&mut child);
    assert!(status.success(), "{log}");
    let hits = rx.hits();
    let runs: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.path.starts_with("/runs/"))
        .collect();
    let failures: Vec<&Hit> = hits.iter().filter(|h| h.path == "/failures").collect();
    assert!(!runs.is_empty() && !failures.is_empty());
    for hit in &runs {
        let event: serde_json::Value = serde_json::from_slice(&hit.body).expect("structured");
        let ty = event["type"].as_str().expect("type");
        assert!(ty.contains(".run."), "{ty}");
        assert_eq!(
            hit.path,
            format!("/runs/{}", event["namespace"].as_str().expect("ns"))
        );
        assert_eq!(hit.headers["x-team"], "data");
    }
    for hit in &failures {
        assert!(
            hit.headers["ce-type"]
                .to_str()
                .expect("type")
                .ends_with(".failed")
        );
    }

    for (yaml, want) in [
        (
            "sinks:\n  - uri: http://h/\n    typo: 1\n",
            "unknown field `typo`",
        ),
        (
            "sinks:\n  - uri: http://h/\n    name: hooks\n    options: {mode: fast}\n",
            "hooks: mode: \"fast\" is not one of",
        ),
        (
            "sinks:\n  - uri: http://h/\n    name: hooks\n    types: [\"\"]\n",
            "sinks[0] (hooks): types: empty pattern",
        ),
        ("retry:\n  initial: soon\n", "retry.retry_initial"),
    ] {
        std::fs::write(&config, yaml).expect("config");
        let out = Command::new(BIN)
            .args([
                "replay",
                &input.display().to_string(),
                "--config",
                &config.display().to_string(),
            ])
            .env_clear()
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(want), "{yaml}: wanted {want:?} in {err}");
    }
    let out = Command::new(BIN)
        .args([
            "replay",
            &input.display().to_string(),
            "--sink",
            "http://u:secret@h/?types=run.*,",
        ])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("--sink http://***@h/") && err.contains("types: empty pattern"),
        "{err}"
    );
    assert!(!err.contains("secret"));
}

/// The conformance kit (`sink_core::conformance`) against a real HTTP receiver: the HTTP sink
/// is one plugin among others, held to the same contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_sink_passes_the_conformance_kit() {
    use sink_core::conformance::{self, Inbox};
    struct Hits(Receiver);
    impl Inbox for Hits {
        fn received(
            &self,
            _want: usize,
            _within: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>> {
            let ids = self.0.hits().into_iter().map(|h| h.id).collect();
            Box::pin(async move { ids })
        }
    }
    let listener = bind();
    let uri = url(&listener, "/kfp");
    let receiver = serve(listener, 202);
    conformance::check(&sink_http::Factory, &uri, &Hits(receiver), "http")
        .await
        .expect("conforms");
    let closed = url(&bind(), "/nobody");
    conformance::check_unreachable(&sink_http::Factory, &closed)
        .await
        .expect("fails in bounded time");
}
