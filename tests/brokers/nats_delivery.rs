//! The binary publishing to a real nats-server with JetStream: every event read back from the
//! stream by an independent client and compared with `replay`'s output; server-side
//! de-duplication; the server stopped for 30 s mid-stream; core NATS; binary mode; max_payload
//! and unrouted subjects dead-lettered; a subject no stream captures refused at start.

use crate::support;

use async_nats::jetstream;
use std::process::Command;
use std::time::Duration;
use support::bridge::{
    BIN, Fed, Scratch, admin_addr, all_recordings, assert_same_as_replay, bridge,
    cdevents_short_type, read_events, readyz_becomes, replayed, replayed_with, run_ok, stderr,
    summaries, wait,
};
use support::nats_server::{NatsServer, create_stream};

async fn stream_named(url: &str, name: &str, subjects: &[&str]) -> jetstream::stream::Stream {
    let client = async_nats::connect(url)
        .await
        .expect("test client connects");
    create_stream(client, name, subjects).await
}

/// Everything in the stream, in stream order: (subject, headers, payload).
async fn read_all(
    stream: &mut jetstream::stream::Stream,
) -> Vec<(String, async_nats::HeaderMap, Vec<u8>)> {
    let count = stream.info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = stream.get_raw_message(seq).await.expect("message");
        out.push((m.subject.to_string(), m.headers, m.payload.to_vec()));
    }
    out
}

fn header(headers: &async_nats::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_stores_every_event_once_and_a_second_replay_is_deduplicated() {
    let scratch = Scratch::new("nats-js");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let server = NatsServer::start("js", None);
    let mut stream = stream_named(&server.url(), "KFP", &["kfp.>"]).await;
    let sink = format!("{}/kfp.{{namespace}}.{{type}}", server.url());
    for round in 1..=2 {
        let mut child = bridge(
            &["replay", &input.display().to_string(), "--sink", &sink],
            &[],
        );
        let status = wait(&mut child, Duration::from_secs(60)).await;
        let log = stderr(&mut child);
        assert!(status.success(), "round {round}: {log}");
        assert_eq!(
            summaries(&log)[&sink]["delivered"].as_u64(),
            Some(want.len() as u64)
        );
    }
    let stored = read_all(&mut stream).await;
    assert_eq!(
        stored.len(),
        want.len(),
        "the second replay was de-duplicated by the server"
    );
    let mut events = Vec::new();
    for (subject, headers, payload) in &stored {
        let event: serde_json::Value = serde_json::from_slice(payload).expect("structured JSON");
        assert_eq!(
            header(headers, "Content-Type").as_deref(),
            Some("application/cloudevents+json")
        );
        assert_eq!(
            header(headers, "Nats-Msg-Id").as_deref(),
            event["id"].as_str()
        );
        let short = event["type"]
            .as_str()
            .expect("type")
            .rsplitn(3, '.')
            .collect::<Vec<_>>();
        assert_eq!(
            subject,
            &format!(
                "kfp.{}.{}.{}",
                event["namespace"].as_str().expect("ns"),
                short[1],
                short[0]
            )
        );
        events.push(event);
    }
    assert_same_as_replay(&events, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_30_s_mid_stream_loses_nothing() {
    let scratch = Scratch::new("nats-outage");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let mut server = NatsServer::start("outage", None);
    let mut stream = stream_named(&server.url(), "KFP", &["kfp.>"]).await;
    let sink = format!("{}/kfp.{{namespace}}.{{type}}", server.url());
    let admin = ["--admin-addr", "127.0.0.1:0", "--health-interval", "1s"];
    let mut fed = Fed::start_with(&input, &sink, &admin);
    let addr = admin_addr(&mut fed.child).await;
    // Wait until the first half is stored, then take the server away.
    for _ in 0..200 {
        if stream.info().await.expect("info").state.messages > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before = stream.info().await.expect("info").state.messages;
    assert!(before > 0, "nothing arrived before the outage");
    readyz_becomes(&addr, 200, "", Duration::from_secs(5)).await;
    server.stop();
    // The client notices the lost connection; the next health check says so, naming the sink.
    fed.outage(&addr, "nats://").await;
    server.resume();
    let (after, _) = readyz_becomes(&addr, 200, "", Duration::from_secs(30)).await;
    eprintln!("ready {after:?} after the server resumed");
    fed.close();
    let status = wait(&mut fed.child, Duration::from_secs(90)).await;
    let log = stderr(&mut fed.child);
    assert!(status.success(), "{log}");
    let mut stream = stream_named_existing(&server.url(), "KFP").await;
    let events: Vec<serde_json::Value> = read_all(&mut stream)
        .await
        .iter()
        .map(|(_, _, p)| serde_json::from_slice(p).expect("json"))
        .collect();
    assert!(
        before < want.len() as u64,
        "the outage really was mid-stream"
    );
    assert_same_as_replay(&events, &want);
    assert!(summaries(&log)[&sink]["retried"].as_u64() > Some(0));
}

async fn stream_named_existing(url: &str, name: &str) -> jetstream::stream::Stream {
    let client = async_nats::connect(url).await.expect("connects");
    jetstream::new(client)
        .get_stream(name)
        .await
        .expect("stream")
}

/// The next `n` messages of a core subscription, each rebuilt into the structured form from its
/// binary-mode headers: (subject, event).
async fn binary_events(
    sub: &mut async_nats::Subscriber,
    n: usize,
) -> Vec<(String, serde_json::Value)> {
    use futures_util::StreamExt;
    let mut events = Vec::new();
    while events.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("every event arrives")
            .expect("message");
        let h = m.headers.as_ref().expect("headers");
        let attr = |n: &str| {
            h.get(format!("ce-{n}").as_str()).map(|v| {
                percent_encoding::percent_decode_str(v.as_str())
                    .decode_utf8()
                    .expect("utf8")
                    .into_owned()
            })
        };
        assert_eq!(
            header(h, "Content-Type").as_deref(),
            Some("application/json")
        );
        assert!(h.get("ce-datacontenttype").is_none());
        // Rebuild the structured form from the binary message to compare with replay.
        let mut event = serde_json::json!({
            "specversion": attr("specversion"),
            "id": attr("id"),
            "source": attr("source"),
            "type": attr("type"),
            "datacontenttype": "application/json",
            "data": serde_json::from_slice::<serde_json::Value>(&m.payload).expect("data"),
        });
        for name in [
            "dataschema",
            "subject",
            "time",
            "kfprunid",
            "namespace",
            "workflow",
            "pipeline",
            "partitionkey",
        ] {
            if let Some(v) = attr(name) {
                event[name] = v.into();
            }
        }
        events.push((m.subject.to_string(), event));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_and_binary_mode_reach_a_plain_subscriber() {
    let scratch = Scratch::new("nats-core");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let server = NatsServer::start("core", None);
    let client = async_nats::connect(server.url()).await.expect("connects");
    let mut sub = client.subscribe("core.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let sink = format!("{}/core.{{type}}?jetstream=false&mode=binary", server.url());
    let mut child = bridge(
        &["replay", &input.display().to_string(), "--sink", &sink],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    assert!(status.success(), "{}", stderr(&mut child));
    let events: Vec<serde_json::Value> = binary_events(&mut sub, want.len())
        .await
        .into_iter()
        .map(|(_, event)| event)
        .collect();
    assert_same_as_replay(&events, &want);
}

/// CDEvents through both modes: binary to a core subscriber, structured into a JetStream stream
/// (de-duplicated by the CDEvent's id); `{type}` is the CDEvent's `subject.predicate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdevents_in_binary_and_structured_mode_equal_replays_cdevents() {
    let scratch = Scratch::new("nats-cdevents");
    let input = all_recordings(&scratch);
    let want = replayed_with(&input, &["--format", "cdevents"]);
    let server = NatsServer::start("cdevents", None);
    let mut stream = stream_named(&server.url(), "CD", &["cds.>"]).await;
    let client = async_nats::connect(server.url()).await.expect("connects");
    let mut sub = client.subscribe("cdb.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let binary = format!(
        "{}/cdb.{{type}}?jetstream=false&mode=binary&format=cdevents",
        server.url()
    );
    let structured = format!(
        "{}/cds.{{type}}?mode=structured&format=cdevents",
        server.url()
    );
    let input = input.display().to_string();
    run_ok(
        &["replay", &input, "--sink", &binary, "--sink", &structured],
        &[],
    )
    .await;
    let binary = binary_events(&mut sub, want.len()).await;
    let mut structured = Vec::new();
    for (subject, headers, payload) in read_all(&mut stream).await {
        let event: serde_json::Value = serde_json::from_slice(&payload).expect("structured JSON");
        assert_eq!(
            header(&headers, "Content-Type").as_deref(),
            Some("application/cloudevents+json")
        );
        assert_eq!(
            header(&headers, "Nats-Msg-Id").as_deref(),
            event["id"].as_str()
        );
        structured.push((subject, event));
    }
    for (prefix, got) in [("cdb", binary), ("cds", structured)] {
        for (subject, event) in &got {
            let ty = event["type"].as_str().expect("type");
            assert_eq!(subject, &format!("{prefix}.{}", cdevents_short_type(ty)));
        }
        let finished = format!("{prefix}.taskrun.finished");
        assert!(
            got.iter().any(|(subject, _)| *subject == finished),
            "{finished}"
        );
        let events: Vec<serde_json::Value> = got.into_iter().map(|(_, event)| event).collect();
        assert_same_as_replay(&events, &want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_uncaptured_events_are_dead_lettered_and_a_fixed_uncaptured_subject_is_refused()
 {
    let scratch = Scratch::new("nats-limits");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let server = NatsServer::start("limits", Some("max_payload: 1400\n"));
    let mut stream = stream_named(&server.url(), "KFP", &["kfp.run.>"]).await;
    let dead = scratch.path("dead.jsonl");
    // Task events go to subjects no stream captures; big events exceed max_payload.
    let sink = format!("{}/kfp.{{type}}", server.url());
    run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &sink,
            "--dead-letter",
            &format!("file:{}", dead.display()),
        ],
        &[],
    )
    .await;
    let dead = read_events(&dead);
    let stored = read_all(&mut stream).await.len();
    assert_eq!(
        stored + dead.len(),
        want.len(),
        "each event stored or dead-lettered"
    );
    let reasons: Vec<&str> = dead
        .iter()
        .map(|e| e["deadletterreason"].as_str().expect("reason"))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no JetStream stream captures subject \"kfp.task."))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("max payload size exceeded")),
        "{reasons:?}"
    );
    assert!(dead.iter().all(|e| e["deadlettersink"] == sink.as_str()));

    // A fixed subject no stream captures: refused at start, naming the sink.
    let out = Command::new(BIN)
        .args([
            "replay",
            &input.display().to_string(),
            "--sink",
            &format!("{}/nowhere.at.all", server.url()),
        ])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no JetStream stream captures subject \"nowhere.at.all\""),
        "{err}"
    );
    // An unreachable server at start: a clear error naming the sink.
    let out = Command::new(BIN)
        .args([
            "replay",
            &input.display().to_string(),
            "--sink",
            "nats://127.0.0.1:9/kfp",
        ])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nats://127.0.0.1:9/kfp") && err.contains("cannot connect to NATS"),
        "{err}"
    );
}

/// The conformance kit (`sink_core::conformance`) against a real nats-server with JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_sink_passes_the_conformance_kit() {
    use sink_core::conformance::{self, Inbox};
    struct Stream(String);
    impl Inbox for Stream {
        fn received(
            &self,
            want: usize,
            within: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>> {
            Box::pin(async move {
                let client = async_nats::connect(&self.0).await.expect("connects");
                let mut stream = jetstream::new(client)
                    .get_stream("CONFORMANCE")
                    .await
                    .expect("stream");
                let t0 = std::time::Instant::now();
                loop {
                    let all = read_all(&mut stream).await;
                    if all.len() >= want || t0.elapsed() > within {
                        return all
                            .iter()
                            .map(|(_, _, payload)| {
                                let event: serde_json::Value =
                                    serde_json::from_slice(payload).expect("structured");
                                event["id"].as_str().expect("id").to_owned()
                            })
                            .collect();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        }
    }
    let server = NatsServer::start("conformance", None);
    stream_named(&server.url(), "CONFORMANCE", &["kfp.conformance"]).await;
    let uri = format!("{}/kfp.conformance?mode=structured", server.url());
    conformance::check(&sink_nats::Factory, &uri, &Stream(server.url()), "nats")
        .await
        .expect("conforms");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    conformance::check_unreachable(
        &sink_nats::Factory,
        &format!("nats://127.0.0.1:{port}/kfp.x"),
    )
    .await
    .expect("fails in bounded time");
}
