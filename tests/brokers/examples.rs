//! The consumer examples in `examples/`, built by `cargo test`, run against real brokers and a
//! real bridge: each prints exactly the events it should receive (checked by id against
//! `replay`); the chat notifier posts the messages a person should read; the chain consumer makes
//! the one KFP API call a bundled recording calls for, and none for a repeated event.

use crate::support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::bridge::{Scratch, all_recordings, bridge, replayed, stderr, wait};
use support::kafka_server::KafkaServer;
use support::nats_server::NatsServer;
use support::rabbit_server::RabbitServer;

/// An example binary running with its output in files.
struct Example {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Example {
    fn start(scratch: &Scratch, name: &str, args: &[&str]) -> Self {
        // target/debug/deps/examples-HASH → target/debug/examples/NAME
        let exe = std::env::current_exe().expect("test binary");
        let path = exe.parent().and_then(|d| d.parent()).expect("target dir");
        let path = path.join("examples").join(name);
        let tag = format!(
            "{name}-{}",
            args.len() + scratch.0.read_dir().map_or(0, Iterator::count)
        );
        let (out, err) = (
            scratch.path(&format!("{tag}.out")),
            scratch.path(&format!("{tag}.err")),
        );
        let child = Command::new(&path)
            .args(args)
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} ({e}): built by cargo test", path.display()));
        Self { child, out, err }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for `needle` on standard error; the rest of that line.
    async fn logged(&mut self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(line) = self.stderr().lines().find_map(|l| l.split_once(needle)) {
                return line.1.trim().to_owned();
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("exited {status} before {needle:?}: {}", self.stderr());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {needle:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the example to exit by itself (after `--count` events); its standard output.
    async fn finished(&mut self) -> String {
        let t0 = Instant::now();
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "still running: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = self.child.wait().expect("status");
        assert!(status.success(), "{status}: {}", self.stderr());
        std::fs::read_to_string(&self.out).expect("stdout")
    }

    /// Stops a server example with SIGTERM, as Kubernetes would; its standard output.
    async fn stopped(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.finished().await
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids of `replay`'s events for `input` whose short type is one of `types` (all if empty).
fn ids(input: &std::path::Path, types: &[&str]) -> BTreeSet<String> {
    replayed(input)
        .iter()
        .filter(|e| {
            let ty = e["type"].as_str().expect("type");
            types.is_empty() || types.iter().any(|t| ty.ends_with(&format!(".{t}")))
        })
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Status lines by event id; each id printed once, each line starting with its short type.
fn printed(stdout: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let id = line
            .rsplit_once(" id=")
            .expect("status line ends with the id")
            .1;
        assert!(line.starts_with(['r', 't']), "{line}");
        assert!(
            out.insert(id.to_owned(), line.to_owned()).is_none(),
            "printed twice: {line}"
        );
    }
    out
}

async fn publish(input: &std::path::Path, sink: &str) {
    let mut child = bridge(
        &["replay", &input.display().to_string(), "--sink", sink],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    assert!(status.success(), "bridge: {}", stderr(&mut child));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_group_prints_every_event() {
    let scratch = Scratch::new("example-kafka");
    let input = all_recordings(&scratch);
    let want = ids(&input, &[]);
    let server = KafkaServer::start("example");
    server.topics(&["kfp-events"]).await;
    publish(
        &input,
        &format!("kafka://{}/kfp-events", server.bootstrap()),
    )
    .await;
    let count = want.len().to_string();
    let mut consumer = Example::start(
        &scratch,
        "kafka_consumer",
        &[
            "--brokers",
            &server.bootstrap(),
            "--topic",
            "kfp-events",
            "--count",
            &count,
        ],
    );
    let lines = printed(&consumer.finished().await);
    assert_eq!(lines.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        lines.values().any(|l| l.starts_with("run.succeeded")
            && l.contains("kubeflow-user/iris-training-8xk2p pipeline=iris-training")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_consumer_sees_only_failed_tasks_and_resumes() {
    let scratch = Scratch::new("example-nats");
    let input = all_recordings(&scratch);
    let want = ids(&input, &["task.failed"]);
    let server = NatsServer::start("example", None);
    // The first copy creates the stream (kfp.>) before the bridge starts, takes two events and
    // exits; the second continues where the first acknowledged.
    let mut first = Example::start(
        &scratch,
        "nats_task_failed",
        &["--server", &server.url(), "--count", "2"],
    );
    first.logged("consuming").await;
    publish(
        &input,
        &format!("{}/kfp.{{namespace}}.{{type}}", server.url()),
    )
    .await;
    let mut got = BTreeMap::new();
    let mut take = |stdout: String| {
        for (id, line) in printed(&stdout) {
            assert!(line.starts_with("task.failed"), "{line}");
            assert!(
                got.insert(id, line).is_none(),
                "delivered again after its ack"
            );
        }
    };
    take(first.finished().await);
    let rest = (want.len() - 2).to_string();
    let args = ["--server", &server.url(), "--count", &rest];
    take(
        Example::start(&scratch, "nats_task_failed", &args)
            .finished()
            .await,
    );
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_queue_prints_what_its_binding_selects() {
    let scratch = Scratch::new("example-rabbit");
    let input = all_recordings(&scratch);
    let want = ids(
        &input,
        &["run.queued", "run.started", "run.succeeded", "run.failed"],
    );
    let server = RabbitServer::start("example");
    let count = want.len().to_string();
    let mut consumer = Example::start(
        &scratch,
        "rabbitmq_queue",
        &[
            "--url",
            &server.url(),
            "--binding",
            "kfp.*.run.*",
            "--count",
            &count,
        ],
    );
    consumer.logged("consuming").await;
    // Only run events are published: a task event no queue is bound for would be returned by
    // the broker and count as undeliverable.
    let sink = format!(
        "{}?exchange=kfp&routing_key=kfp.{{namespace}}.{{type}}&types=run.*",
        server.url()
    );
    publish(&input, &sink).await;
    let lines = printed(&consumer.finished().await);
    assert_eq!(lines.keys().cloned().collect::<BTreeSet<_>>(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_receiver_decodes_binary_and_structured_mode() {
    let scratch = Scratch::new("example-http");
    let input = all_recordings(&scratch);
    let want = ids(&input, &[]);
    for mode in ["binary", "structured"] {
        let mut receiver = Example::start(&scratch, "http_receiver", &["--listen", "127.0.0.1:0"]);
        let addr = receiver.logged("listening on").await;
        publish(&input, &format!("http://{addr}/?mode={mode}")).await;
        let lines = printed(&receiver.stopped().await);
        assert_eq!(
            lines.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "{mode}"
        );
    }
}

/// A form-encoded query string, decoded.
fn query(raw: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap, serde_json::Value)>>>;

/// A local HTTP server recording every request (method and path, headers, JSON body) and
/// answering with `answer`; its address.
async fn stub(
    answer: fn(&str, &BTreeMap<String, String>, &serde_json::Value, &Seen) -> serde_json::Value,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let handler = move |State(seen): State<Seen>,
                        method: axum::http::Method,
                        uri: axum::http::Uri,
                        headers: HeaderMap,
                        body: Bytes| async move {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let request = format!("{method} {}", uri.path());
        let reply = answer(&request, &query(uri.query()), &body, &seen);
        seen.lock().unwrap().push((request, headers, body));
        (
            [(header::CONTENT_TYPE, "application/json")],
            reply.to_string(),
        )
    };
    let app = Router::new()
        .fallback(get(handler).post(handler))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_notifier_posts_readable_messages_for_failed_and_stuck_tasks() {
    let scratch = Scratch::new("example-chat");
    let input = all_recordings(&scratch);
    let want = ids(&input, &["task.failed", "task.warning"]);
    let (webhook, seen) = stub(|_, _, _, _| serde_json::json!({"ok": true})).await;
    let secret = scratch.path("webhook-url");
    std::fs::write(
        &secret,
        format!("http://{webhook}/hooks/T000/B000/XXXXSECRET\n"),
    )
    .unwrap();
    let mut notifier = Example::start(
        &scratch,
        "chat_notifier",
        &[
            "--listen",
            "127.0.0.1:0",
            "--webhook-file",
            &secret.display().to_string(),
        ],
    );
    let addr = notifier.logged("listening on").await;
    // Everything is sent to it; it must pick the two types itself.
    publish(&input, &format!("http://{addr}/")).await;
    notifier.stopped().await;
    let texts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(request, _, body)| {
            assert_eq!(request, "POST /hooks/T000/B000/XXXXSECRET");
            body["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(
        texts.len(),
        want.len(),
        "{texts:#?}\nthe notifier's log: {}",
        notifier.stderr()
    );
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(
        has(
            "❌ Task `embed` failed in run Run of embeddings-build (embeddings-build-x4c7n) \
         (pipeline embeddings-build, namespace kubeflow-user): main: OOMKilled (exit code 137) \
         — exit code 137: killed, most often out of memory"
        ),
        "{texts:#?}"
    );
    assert!(
        has("❌ Task `train` failed in run Run of fraud-detector"),
        "{texts:#?}"
    );
    assert!(has("attempt 3): main: Error (exit code 1)"), "{texts:#?}");
    assert!(
        has(
            "⚠️ Task `score` in run Run of llm-eval (llm-eval-k9d4s) (pipeline llm-eval, namespace \
         kubeflow-user) is stuck: ImagePull (ErrImagePull) — it will not start without a change."
        ),
        "{texts:#?}"
    );
    assert!(
        has("is stuck: Scheduling (Unschedulable) — it may still start."),
        "{texts:#?}"
    );
    assert!(
        !notifier.stderr().contains("XXXXSECRET"),
        "the webhook URL is a secret"
    );
}

/// The KFP API stub: lists runs whose display name equals the filter's, creates runs.
fn kfp_api(
    request: &str,
    query: &BTreeMap<String, String>,
    body: &serde_json::Value,
    seen: &Seen,
) -> serde_json::Value {
    let created = |name: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(r, _, b)| r == "POST /apis/v2beta1/runs" && b["display_name"] == name)
            .map(|(_, _, b)| b.clone())
            .collect::<Vec<_>>()
    };
    match request {
        "GET /apis/v2beta1/runs" => {
            let filter: serde_json::Value =
                serde_json::from_str(&query["filter"]).expect("filter is JSON");
            let predicate = &filter["predicates"][0];
            assert_eq!(predicate["key"], "display_name");
            assert_eq!(predicate["operation"], "EQUALS");
            let runs = created(predicate["string_value"].as_str().expect("name"));
            if runs.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({"runs": runs})
            }
        }
        "POST /apis/v2beta1/runs" => {
            let mut run = body.clone();
            run["run_id"] = "3f5e0a8c-run-of-b".into();
            run["state"] = "PENDING".into();
            run
        }
        other => panic!("unexpected KFP call {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_pipelines_starts_b_once_after_a_succeeds() {
    let scratch = Scratch::new("example-chain");
    let input = all_recordings(&scratch);
    let (kfp, seen) = stub(kfp_api).await;
    let token = scratch.path("token");
    std::fs::write(&token, "sa-token-123\n").unwrap();
    let mut chain = Example::start(
        &scratch,
        "chain_pipelines",
        &[
            "--listen",
            "127.0.0.1:0",
            "--kfp-url",
            &format!("http://{kfp}"),
            "--when-pipeline",
            "iris-training",
            "--pipeline-id",
            "b-pipeline-id",
            "--pipeline-version-id",
            "b-version-7",
            "--param",
            "upstream_run={kfprunid}",
            "--param",
            "dataset={param:dataset}",
            "--param",
            "epochs={param:epochs}",
            "--token-file",
            &token.display().to_string(),
        ],
    );
    let addr = chain.logged("listening on").await;
    // The whole recording twice: the second run.succeeded of iris-training starts nothing.
    for _ in 0..2 {
        publish(&input, &format!("http://{addr}/?types=run.*")).await;
    }
    let out = chain.stopped().await;
    let seen = seen.lock().unwrap();
    let posts: Vec<_> = seen
        .iter()
        .filter(|(r, _, _)| r.starts_with("POST"))
        .collect();
    assert_eq!(posts.len(), 1, "{seen:#?}");
    assert_eq!(
        posts[0].2,
        serde_json::json!({
            "display_name": "after iris-training-8xk2p",
            "description": "Started by org.kubeflow.pipelines.run.succeeded of pipeline iris-training",
            "pipeline_version_reference": {
                "pipeline_id": "b-pipeline-id",
                "pipeline_version_id": "b-version-7"
            },
            "runtime_config": {"parameters": {
                "upstream_run": "b7e4c3d2-9a1f-4e8b-8c6d-1f2e3a4b5c6d",
                "dataset": "gs://example-data/iris.csv",
                "epochs": 20
            }},
            "namespace": "kubeflow-user"
        })
    );
    assert_eq!(posts[0].1["authorization"], "Bearer sa-token-123");
    assert_eq!(posts[0].1["content-type"], "application/json");
    let gets = seen.iter().filter(|(r, _, _)| r.starts_with("GET")).count();
    assert_eq!(gets, 2, "asked before each attempt");
    assert!(out.contains("started run 3f5e0a8c-run-of-b"), "{out}");
    assert!(out.contains("exists already"), "{out}");
}
