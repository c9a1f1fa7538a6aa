//! The binary publishing to a real RabbitMQ: queues bound with routing patterns receive what the
//! templates route to them, with the binding's headers and properties, equal to `replay`'s events;
//! the broker stopped for 30 s mid-stream; unroutable keys and a missing exchange dead-lettered or
//! refused at start.

use crate::support;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::bridge::{
    BIN, Fed, Scratch, all_recordings, assert_same_as_replay, cdevents_short_type, read_events,
    replayed, replayed_with, run_ok, stderr, summaries, wait,
};
use support::rabbit_server::RabbitServer;

async fn topology(url: &str, queues: &[(&str, &str)]) -> lapin::Channel {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("test client connects");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            "kfp".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    for (queue, pattern) in queues {
        channel
            .queue_declare(
                (*queue).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                (*queue).into(),
                "kfp".into(),
                (*pattern).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
    std::mem::forget(connection); // kept open for the channel's lifetime in the test
    channel
}

/// Drains a queue; each message rebuilt into the structured form from the binary-mode headers,
/// after checking the binding's properties.
async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<serde_json::Value> {
    drain_routed(channel, queue, false)
        .await
        .into_iter()
        .map(|(_, event)| event)
        .collect()
}

/// As [`drain`], with each message's routing key; `structured`: the messages are in structured
/// mode (the JSON event as body, no `ce-` headers).
async fn drain_routed(
    channel: &lapin::Channel,
    queue: &str,
    structured: bool,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let d = &m.delivery;
        let p = &d.properties;
        let headers: BTreeMap<String, String> = p
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(k, v)| match v {
                        AMQPValue::LongString(s) => (k.to_string(), s.to_string()),
                        other => panic!("header {k} is not a long string: {other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let content_type = p.content_type().as_ref().map(|s| s.as_str());
        let event = if structured {
            assert!(
                headers.is_empty(),
                "no headers in structured mode: {headers:?}"
            );
            assert_eq!(content_type, Some("application/cloudevents+json"));
            serde_json::from_slice(&d.data).expect("structured JSON")
        } else {
            assert!(p.headers().is_some(), "headers");
            assert!(headers.keys().all(|k| k.starts_with("ce-")));
            assert!(!headers.contains_key("ce-datacontenttype"));
            assert_eq!(content_type, Some("application/json"));
            let mut event = serde_json::json!({
                "datacontenttype": "application/json",
                "data": serde_json::from_slice::<serde_json::Value>(&d.data).expect("data"),
            });
            for (k, v) in &headers {
                event[k.trim_start_matches("ce-")] = v.clone().into();
            }
            event
        };
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            event["id"].as_str()
        );
        if let Some(time) = event["time"].as_str() {
            let secs = chrono::DateTime::parse_from_rfc3339(time)
                .expect("time")
                .timestamp();
            assert_eq!(*p.timestamp(), Some(secs as u64));
        }
        out.push((d.routing_key.to_string(), event));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keys_route_and_every_event_arrives_as_the_binding_says_then_failures_dead_letter()
{
    let scratch = Scratch::new("amqp");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let server = RabbitServer::start("routes");
    let channel = topology(
        &server.url(),
        &[
            ("all", "kfp.#"),
            ("task-failures", "kfp.*.task.failed"),
            ("runs", "kfp.*.run.*"),
        ],
    )
    .await;
    let sink = format!(
        "{}?exchange=kfp&routing_key=kfp.{{namespace}}.{{type}}",
        server.url()
    );
    let log = run_ok(
        &["replay", &input.display().to_string(), "--sink", &sink],
        &[],
    )
    .await;
    assert!(!log.contains("guest:guest"), "credentials in the log");
    let all = drain(&channel, "all").await;
    assert_same_as_replay(&all, &want);
    let failures = drain(&channel, "task-failures").await;
    let runs = drain(&channel, "runs").await;
    let of_type = |suffix: &str| {
        want.iter()
            .filter(|e| e["type"].as_str().expect("t").ends_with(suffix))
            .count()
    };
    assert_eq!(failures.len(), of_type(".task.failed"));
    assert!(
        failures
            .iter()
            .all(|e| e["type"].as_str().expect("t").ends_with(".task.failed"))
    );
    assert_eq!(
        runs.len(),
        want.iter()
            .filter(|e| e["type"].as_str().expect("t").contains(".run."))
            .count()
    );

    // A routing key nobody binds: returned by the broker (mandatory), dead-lettered, counted.
    let dead = scratch.path("dead.jsonl");
    let unroutable = format!("{}?exchange=kfp&routing_key=nobody.{{type}}", server.url());
    let log = run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &unroutable,
            "--dead-letter",
            &format!("file:{}", dead.display()),
        ],
        &[],
    )
    .await;
    let lines = read_events(&dead);
    assert_eq!(lines.len(), want.len());
    assert!(lines.iter().all(|e| {
        e["deadletterreason"]
            .as_str()
            .expect("reason")
            .contains("unroutable: no queue bound for routing key \"nobody.")
    }));
    let redacted = unroutable.replace("guest:guest@", "***@");
    assert_eq!(
        summaries(&log)[&redacted]["dead_lettered"].as_u64(),
        Some(want.len() as u64)
    );

    // A missing exchange: refused at start by default; with declare=none, dead-lettered.
    let missing = format!("{}?exchange=missing", server.url());
    let out = Command::new(BIN)
        .args(["replay", &input.display().to_string(), "--sink", &missing])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exchange \"missing\" is not available"),
        "{err}"
    );
    assert!(!err.contains("guest:guest"));
    let dead2 = scratch.path("dead2.jsonl");
    run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &format!("{missing}&declare=none"),
            "--dead-letter",
            &format!("file:{}", dead2.display()),
        ],
        &[],
    )
    .await;
    let lines = std::fs::read_to_string(&dead2).expect("dead letters");
    assert_eq!(lines.lines().count(), want.len());
    assert!(lines.contains("NOT_FOUND"), "the broker's reason is kept");
}

/// CDEvents through both modes, routed by `{type}` (the CDEvent's `subject.predicate`): each
/// queue holds replay's CDEvents, each once, runs in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdevents_in_binary_and_structured_mode_equal_replays_cdevents() {
    let scratch = Scratch::new("amqp-cdevents");
    let input = all_recordings(&scratch);
    let want = replayed_with(&input, &["--format", "cdevents"]);
    let server = RabbitServer::start("cdevents");
    let channel = topology(
        &server.url(),
        &[("binary", "cdb.#"), ("structured", "cds.#")],
    )
    .await;
    let sink = |prefix: &str, mode: &str| {
        format!(
            "{}?exchange=kfp&routing_key={prefix}.{{type}}&mode={mode}&format=cdevents",
            server.url()
        )
    };
    run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &sink("cdb", "binary"),
            "--sink",
            &sink("cds", "structured"),
        ],
        &[],
    )
    .await;
    for (queue, prefix, structured) in [("binary", "cdb", false), ("structured", "cds", true)] {
        let got = drain_routed(&channel, queue, structured).await;
        for (key, event) in &got {
            let ty = event["type"].as_str().expect("type");
            assert_eq!(key, &format!("{prefix}.{}", cdevents_short_type(ty)));
        }
        let finished = format!("{prefix}.taskrun.finished");
        assert!(got.iter().any(|(key, _)| *key == finished), "{finished}");
        let events: Vec<serde_json::Value> = got.into_iter().map(|(_, event)| event).collect();
        assert_same_as_replay(&events, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_30_s_mid_stream_loses_nothing() {
    let scratch = Scratch::new("amqp-outage");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let mut server = RabbitServer::start("outage");
    let channel = topology(&server.url(), &[("all", "kfp.#")]).await;
    let sink = format!("{}?exchange=kfp&routing_key=kfp.{{type}}", server.url());
    let mut fed = Fed::start(&input, &sink);
    let mut before = 0;
    for _ in 0..200 {
        let q = channel
            .queue_declare(
                "all".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        before = q.message_count();
        if before > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(before > 0, "nothing arrived before the outage");
    drop(channel);
    server.stop();
    fed.rest();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        fed.child.try_wait().expect("poll").is_none(),
        "the bridge waits for the broker"
    );
    server.resume();
    let status = wait(&mut fed.child, Duration::from_secs(120)).await;
    let log = stderr(&mut fed.child);
    assert!(status.success(), "{log}");
    assert!(summaries(&log)[&sink.replace("guest:guest@", "***@")]["retried"].as_u64() > Some(0));
    let connection = Connection::connect(&server.url(), ConnectionProperties::default())
        .await
        .expect("connects after restart");
    let channel = connection.create_channel().await.expect("channel");
    let got = drain(&channel, "all").await;
    // At-least-once: an event whose confirm was lost with the connection may be stored twice, at
    // most one in-flight window's worth; every event is there, runs in order of first arrival.
    let mut first = Vec::new();
    let mut seen = BTreeSet::new();
    for e in &got {
        if seen.insert(e["id"].to_string()) {
            first.push(e.clone());
        }
    }
    assert!(
        got.len() - first.len() <= 256,
        "{} duplicates",
        got.len() - first.len()
    );
    assert!(
        (before as usize) < want.len(),
        "the outage really was mid-stream"
    );
    assert_same_as_replay(&first, &want);
}

/// The conformance kit (`sink_core::conformance`) against a real RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amqp_sink_passes_the_conformance_kit() {
    use sink_core::conformance::{self, Inbox};
    struct Queue(lapin::Channel);
    impl Inbox for Queue {
        fn received(
            &self,
            want: usize,
            within: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>> {
            Box::pin(async move {
                let mut ids = Vec::new();
                let t0 = std::time::Instant::now();
                while ids.len() < want && t0.elapsed() < within {
                    for event in drain(&self.0, "conformance").await {
                        ids.push(event["id"].as_str().expect("id").to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ids
            })
        }
    }
    let server = RabbitServer::start("conformance");
    let channel = topology(&server.url(), &[("conformance", "kfp.#")]).await;
    let uri = format!("{}?exchange=kfp&routing_key=kfp.conformance", server.url());
    conformance::check(&sink_amqp::Factory, &uri, &Queue(channel), "amqp")
        .await
        .expect("conforms");
}

/// `amqps://` against RabbitMQ's TLS listener with a private CA made for this run
/// (`verify_peer`, `fail_if_no_peer_cert`): with `ca_file`, `cert_file` and `key_file` every
/// event arrives; a CA that did not sign the server's certificate, and no client certificate,
/// are each refused at start with exit 1, naming the sink — and the client key never appears in
/// what the bridge writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_and_a_client_certificate() {
    use crate::nats_auth::{delivered, pki, refused};
    let scratch = Scratch::new("amqp-tls");
    let (ours, theirs) = (scratch.path("pki"), scratch.path("other-pki"));
    for dir in [&ours, &theirs] {
        std::fs::create_dir_all(dir).expect("pki dir");
        pki(dir);
    }
    let server = RabbitServer::start_tls(
        "tls",
        support::rabbit_server::Tls {
            ca: &ours.join("ca.pem"),
            cert: &ours.join("server.pem"),
            key: &ours.join("server.key"),
        },
    );
    let channel = topology(&server.url(), &[("all", "kfp.#")]).await;
    let input = all_recordings(&scratch);
    let want = replayed(&input).len();
    let uri = |ca: &Path, client: bool| {
        let mut uri = format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f?exchange=kfp&routing_key=kfp.{{type}}&ca_file={}",
            server.tls_port,
            ca.display()
        );
        if client {
            uri.push_str(&format!(
                "&cert_file={}&key_file={}",
                ours.join("client.pem").display(),
                ours.join("client.key").display()
            ));
        }
        uri
    };
    let sent = delivered(&input, &uri(&ours.join("ca.pem"), true)).await;
    assert_eq!(sent as usize, want);
    assert_eq!(
        drain(&channel, "all").await.len(),
        want,
        "every event over TLS"
    );

    let key = std::fs::read_to_string(ours.join("client.key")).expect("key");
    let secret: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for (what, sink) in [
        (
            "a CA that did not sign the server",
            uri(&theirs.join("ca.pem"), true),
        ),
        ("no client certificate", uri(&ours.join("ca.pem"), false)),
    ] {
        let err = refused(&input, &sink);
        assert!(err.contains("amqp"), "{what}: the sink is named: {err}");
        for line in &secret {
            assert!(!err.contains(line), "{what}: the client key is in the log");
        }
        eprintln!("{what}: {}", err.lines().last().unwrap_or(""));
    }
    assert!(
        drain(&channel, "all").await.is_empty(),
        "nothing over a refused connection"
    );
}

/// A broker restarted without the queue (a non-durable queue, or one not yet recovered): for
/// `UNROUTABLE_GRACE` (30 s) after reconnecting, unroutable events are retried, not refused, so
/// that a queue declared again 3 s after the restart receives every event published meanwhile —
/// none undeliverable. (Before, each of them was refused for good at once: the 49 events a
/// loaded machine's RabbitMQ returned while recovering its bindings. And a reconnect that
/// came after refused attempts was not counted as one, so the grace never applied after an
/// outage longer than the first retry: this test feeds the bridge while the broker is down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_just_after_a_reconnect_is_retried_until_the_queue_is_back() {
    let scratch = Scratch::new("amqp-rebind");
    let input = all_recordings(&scratch);
    let mut server = RabbitServer::start("rebind");
    let declare = |channel: lapin::Channel, queue: &'static str| async move {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                queue.into(),
                "kfp".into(),
                "kfp.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        channel
    };
    // A durable exchange, a queue that does not survive a restart.
    let channel = declare(topology(&server.url(), &[]).await, "before").await;
    let sink = format!("{}?exchange=kfp&routing_key=kfp.{{type}}", server.url());
    let mut fed = Fed::start(&input, &sink);
    let t0 = std::time::Instant::now();
    while drain(&channel, "before").await.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "nothing before the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(channel);
    server.stop();
    // The rest is fed while the broker is down, so the bridge's first attempts to reconnect
    // are refused: the attempt that succeeds later is a reconnect all the same.
    fed.rest();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let channel = declare(topology(&server.url(), &[]).await, "after").await;
    let status = wait(&mut fed.child, Duration::from_secs(120)).await;
    let log = stderr(&mut fed.child);
    assert!(status.success(), "{log}");
    let summary = &summaries(&log)[&sink.replace("guest:guest@", "***@")];
    assert_eq!(summary["undeliverable"].as_u64(), Some(0), "{summary}");
    assert!(summary["retried"].as_u64() > Some(0), "{summary}");
    assert!(
        !drain(&channel, "after").await.is_empty(),
        "the queue declared again got events"
    );
    assert!(
        log.contains("just after reconnecting"),
        "the retry says why: {log}"
    );
}
