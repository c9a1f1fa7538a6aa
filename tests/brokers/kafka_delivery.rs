//! The Kafka sink end to end: the binary publishing to a real Kafka-protocol broker (noida-db,
//! started per test on its own loopback port), read back by an independent consumer.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;
use support::bridge::{
    BIN, Fed, Scratch, admin_addr, all_recordings, assert_same_as_replay, cdevents_short_type, get,
    read_events, readyz_becomes, replayed, replayed_with, run_ok, samples, stderr, summaries, wait,
};
use support::kafka_server::{KafkaServer, Record};

/// Every attribute but `data` and `datacontenttype` as its `ce_` header, `content-type` from
/// `datacontenttype`, key = `partitionkey`, value = data.
fn assert_binary_record(record: &Record, event: &serde_json::Value) {
    let object = event.as_object().expect("event object");
    for (name, value) in object {
        match name.as_str() {
            "data" => {
                let value_json: serde_json::Value =
                    serde_json::from_slice(&record.value).expect("value is the JSON data");
                assert_eq!(&value_json, value, "value = data");
            }
            "datacontenttype" => {
                assert_eq!(
                    record.header("content-type"),
                    value.as_str(),
                    "content-type"
                );
            }
            _ => {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(
                    record.header(&format!("ce_{name}")),
                    Some(text.as_str()),
                    "header ce_{name}"
                );
            }
        }
    }
    let ce_headers = record
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("ce_"))
        .count();
    assert_eq!(ce_headers, object.len() - 2, "no other ce_ headers");
    assert_eq!(
        record.key.as_deref(),
        event["partitionkey"].as_str().map(str::as_bytes),
        "key = partitionkey"
    );
}

/// `count` structured-mode records of `topic`, each checked as the binding says (the JSON event
/// as the value, no `ce_` headers, the partition key as the record key), as events.
fn structured_events(server: &KafkaServer, topic: &str, count: usize) -> Vec<serde_json::Value> {
    server
        .consume(topic, count, Duration::from_secs(30))
        .into_iter()
        .map(|record| {
            assert_eq!(
                record.header("content-type"),
                Some("application/cloudevents+json; charset=UTF-8")
            );
            assert!(record.headers.iter().all(|(k, _)| !k.starts_with("ce_")));
            let event: serde_json::Value = serde_json::from_slice(&record.value).expect("json");
            assert_eq!(
                record.key.as_deref(),
                event["partitionkey"].as_str().map(str::as_bytes)
            );
            event
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_an_independent_consumer_as_the_binding_says() {
    let scratch = Scratch::new("kafka-binding");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let server = KafkaServer::start("binding");
    server
        .topics(&[
            "kfp.events",
            "kfp.argo",
            "kfp.kubeflow",
            "kfp.kubeflow-user",
        ])
        .await;
    let binary = format!("kafka://{}/kfp.events", server.bootstrap());
    let structured = format!(
        "kafka://{}/kfp.{{namespace}}?mode=structured",
        server.bootstrap()
    );
    let log = run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &binary,
            "--sink",
            &structured,
        ],
        &[],
    )
    .await;
    assert_eq!(summaries(&log)[&binary]["delivered"], want.len());

    let records = server.consume("kfp.events", want.len(), Duration::from_secs(30));
    assert_eq!(records.len(), want.len());
    let by_id: BTreeMap<&str, &serde_json::Value> = want
        .iter()
        .map(|e| (e["id"].as_str().expect("id"), e))
        .collect();
    for record in &records {
        let id = record.header("ce_id").expect("ce_id");
        assert_binary_record(record, by_id[id]);
    }
    // Structured: one topic per namespace from the template, the JSON event as the value.
    let mut seen = Vec::new();
    for namespace in want
        .iter()
        .map(|e| e["namespace"].as_str().expect("namespace"))
        .collect::<BTreeSet<_>>()
    {
        let count = want.iter().filter(|e| e["namespace"] == namespace).count();
        seen.extend(structured_events(
            &server,
            &format!("kfp.{namespace}"),
            count,
        ));
    }
    seen.sort_by_key(|e| e["id"].as_str().map(str::to_owned));
    let mut sorted = want.clone();
    sorted.sort_by_key(|e| e["id"].as_str().map(str::to_owned));
    assert_eq!(seen, sorted, "structured values equal replay's events");
}

/// CDEvents through both modes onto one topic per CDEvent type (`{type}` is its
/// `subject.predicate`): binary records as the binding says, structured values the JSON event;
/// each topic holds its type's events of replay's CDEvents, each once, runs in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdevents_in_binary_and_structured_mode_equal_replays_cdevents() {
    let scratch = Scratch::new("kafka-cdevents");
    let input = all_recordings(&scratch);
    let want = replayed_with(&input, &["--format", "cdevents"]);
    let mut by_type: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for event in &want {
        let ty = event["type"].as_str().expect("type");
        by_type
            .entry(cdevents_short_type(ty))
            .or_default()
            .push(event.clone());
    }
    assert!(by_type.contains_key("taskrun.finished"));
    let server = KafkaServer::start("cdevents");
    let topics: Vec<String> = by_type
        .keys()
        .flat_map(|short| [format!("cdb.{short}"), format!("cds.{short}")])
        .collect();
    server
        .topics(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let binary = format!(
        "kafka://{}/cdb.{{type}}?mode=binary&format=cdevents",
        server.bootstrap()
    );
    let structured = format!(
        "kafka://{}/cds.{{type}}?mode=structured&format=cdevents",
        server.bootstrap()
    );
    run_ok(
        &[
            "replay",
            &input.display().to_string(),
            "--sink",
            &binary,
            "--sink",
            &structured,
        ],
        &[],
    )
    .await;
    for (short, of_type) in &by_type {
        let by_id: BTreeMap<&str, &serde_json::Value> = of_type
            .iter()
            .map(|e| (e["id"].as_str().expect("id"), e))
            .collect();
        let topic = format!("cdb.{short}");
        let mut got = Vec::new();
        for record in server.consume(&topic, of_type.len(), Duration::from_secs(30)) {
            let id = record.header("ce_id").expect("ce_id");
            let event = by_id
                .get(id)
                .unwrap_or_else(|| panic!("{topic}: {id} is not one of replay's CDEvents"));
            assert_binary_record(&record, event);
            got.push((*event).clone());
        }
        assert_same_as_replay(&got, of_type);
        let got = structured_events(&server, &format!("cds.{short}"), of_type.len());
        assert_same_as_replay(&got, of_type);
    }
}

/// 100 runs of 10 events, interleaved, onto a 6-partition topic: each run on one partition, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_run_order_holds_on_six_partitions() {
    let scratch = Scratch::new("kafka-order");
    let server = KafkaServer::start("order");
    server.create_topic("kfp.ordered", 6).await;
    let input = scratch.path("interleaved.jsonl");
    let mut lines = Vec::new();
    for n in 0..10 {
        for run in 0..100 {
            lines.push(
                serde_json::json!({
                    "specversion": "1.0", "id": format!("run-{run}-{n}"), "source": "/test",
                    "type": "org.kubeflow.pipelines.task.started", "partitionkey": format!("run-{run}"),
                    "datacontenttype": "application/json", "data": {"n": n},
                })
                .to_string(),
            );
        }
    }
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    let sink = format!("kafka://{}/kfp.ordered", server.bootstrap());
    run_ok(
        &["resend", &input.display().to_string(), "--sink", &sink],
        &[],
    )
    .await;
    assert_eq!(server.partitions()["kfp.ordered"], 6);
    let records = server.consume("kfp.ordered", 1000, Duration::from_secs(30));
    assert_eq!(records.len(), 1000);
    let mut runs: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
        runs.entry(key)
            .or_default()
            .push((r.partition, r.header("ce_id").expect("id").to_owned()));
    }
    assert_eq!(runs.len(), 100);
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );
    for (run, events) in runs {
        let parts: BTreeSet<i32> = events.iter().map(|(p, _)| *p).collect();
        assert_eq!(parts.len(), 1, "{run} spread over {parts:?}");
        let ids: Vec<String> = events.into_iter().map(|(_, id)| id).collect();
        let want: Vec<String> = (0..10).map(|n| format!("{run}-{n}")).collect();
        assert_eq!(ids, want, "{run} out of order");
    }
}

/// Waits until the bridge at `addr` has published everything routed so far and nothing moved
/// for a second: no record is in flight, so a broker stopped now cannot acknowledge one while
/// it saves its data (noida-db serves connections until it exits).
async fn all_routed_published(addr: &str) {
    let t0 = std::time::Instant::now();
    let mut last = None;
    loop {
        let (_, text) = get(addr, "/metrics").await;
        let sum = |family: &str| -> f64 {
            samples(&text)
                .iter()
                .filter(|(k, _)| k.starts_with(family))
                .map(|(_, v)| v)
                .sum()
        };
        let now = (
            sum("kfp_event_bridge_events_routed_total"),
            sum("kfp_event_bridge_events_published_total"),
        );
        if now.0 > 0.0 && now.0 == now.1 && last == Some(now) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not everything routed was published: {now:?}"
        );
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_30_s_mid_stream_loses_nothing() {
    let scratch = Scratch::new("kafka-outage");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let mut server = KafkaServer::start("outage");
    server.topics(&["kfp.outage"]).await;
    let sink = format!("kafka://{}/kfp.outage", server.bootstrap());
    let admin = ["--admin-addr", "127.0.0.1:0", "--health-interval", "1s"];
    let mut fed = Fed::start_with(&input, &sink, &admin);
    let addr = admin_addr(&mut fed.child).await;
    let before = server
        .consume("kfp.outage", 1, Duration::from_secs(30))
        .len();
    assert!(before > 0, "nothing arrived before the outage");
    assert_eq!(
        get(&addr, "/readyz").await.0,
        200,
        "ready before the outage"
    );
    all_routed_published(&addr).await;
    server.stop();
    // Not ready within the health interval plus the metadata request's 5 s, naming the sink.
    fed.outage(&addr, &format!("kafka://{}", server.bootstrap()))
        .await;
    server.resume();
    let (after, _) = readyz_becomes(&addr, 200, "", Duration::from_secs(30)).await;
    eprintln!("ready {after:?} after the broker resumed");
    fed.close();
    let status = wait(&mut fed.child, Duration::from_secs(120)).await;
    let log = stderr(&mut fed.child);
    assert!(status.success(), "{log}");
    let records = server.consume("kfp.outage", usize::MAX, Duration::from_secs(15));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *counts
            .entry(r.header("ce_id").expect("id").to_owned())
            .or_default() += 1;
    }
    let want_ids: BTreeSet<String> = want
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let missing: Vec<_> = want_ids
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 256,
        "{duplicates} duplicates, beyond the in-flight window"
    );
    eprintln!(
        "{} records for {} events ({duplicates} duplicates)",
        records.len(),
        want.len()
    );
}

/// A broker that lost records it had acknowledged (restored here from a copy of its data taken
/// before the bridge wrote any, as after an unclean leader election) answers the idempotent
/// producer's next records with OutOfOrderSequenceNumber, and librdkafka declares that producer
/// fatally failed. The sink must start a new producer and send the failed records again: every
/// event after the loss arrives and the replay ends cleanly, instead of the lane retrying a dead
/// producer for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_acknowledged_records_gets_a_new_producer() {
    if KafkaServer::kind() == "tansu" {
        eprintln!("tansu keeps no data file to roll back: noida-db only");
        return;
    }
    let scratch = Scratch::new("kafka-fatal");
    let input = all_recordings(&scratch);
    let want = replayed(&input);
    let mut server = KafkaServer::start("fatal");
    server.create_topic("kfp.fatal", 1).await;
    // The broker's data with the topic and nothing in it.
    server.stop();
    let data = server.dir.join("data").join("kafka.json");
    let empty = scratch.path("kafka-empty.json");
    std::fs::copy(&data, &empty).expect("copy the broker's data");
    server.resume();

    let sink = format!("kafka://{}/kfp.fatal", server.bootstrap());
    let admin = ["--admin-addr", "127.0.0.1:0"];
    let mut fed = Fed::start_with(&input, &sink, &admin);
    let addr = admin_addr(&mut fed.child).await;
    // The first half delivered and nothing in flight.
    all_routed_published(&addr).await;
    let held: i64 = server.high_watermarks("kfp.fatal").iter().sum();
    let before: BTreeSet<String> = server
        .consume(
            "kfp.fatal",
            usize::try_from(held).expect("count"),
            Duration::from_secs(15),
        )
        .iter()
        .map(|r| r.header("ce_id").expect("id").to_owned())
        .collect();
    assert!(!before.is_empty(), "nothing delivered before the loss");
    // The broker forgets all of it, the producer's sequence numbers included.
    server.stop();
    std::fs::copy(&empty, &data).expect("roll the broker's data back");
    server.resume();
    assert_eq!(server.high_watermarks("kfp.fatal"), [0], "rolled back");

    fed.rest();
    let status = wait(&mut fed.child, Duration::from_secs(120)).await;
    let log = stderr(&mut fed.child);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("kafka producer failed fatally"),
        "the fatal error is logged: {log}"
    );
    let records = server.consume("kfp.fatal", usize::MAX, Duration::from_secs(10));
    let got: BTreeSet<String> = records
        .iter()
        .map(|r| r.header("ce_id").expect("id").to_owned())
        .collect();
    // Each run's events after the loss in their order, across the two producers.
    let runs = |ids: &mut dyn Iterator<Item = (String, String)>| {
        let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (key, id) in ids {
            if !before.contains(&id) && seen.insert(id.clone()) {
                runs.entry(key).or_default().push(id);
            }
        }
        runs
    };
    let published = runs(&mut records.iter().map(|r| {
        (
            r.header("ce_partitionkey").unwrap_or_default().to_owned(),
            r.header("ce_id").expect("id").to_owned(),
        )
    }));
    let replay_order = runs(&mut want.iter().map(|e| {
        (
            e["partitionkey"].as_str().unwrap_or_default().to_owned(),
            e["id"].as_str().expect("id").to_owned(),
        )
    }));
    assert_eq!(published, replay_order, "a run's events out of order");
    let lost_by_the_broker = want
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .filter(|id| before.contains(*id))
        .count();
    let missing: Vec<&str> = want
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .filter(|id| !before.contains(*id) && !got.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "lost after the broker's loss: {missing:?}"
    );
    eprintln!(
        "{} events: {lost_by_the_broker} lost by the broker's rollback, the other {} delivered",
        want.len(),
        want.len() - lost_by_the_broker
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_events_are_dead_lettered_and_bad_sinks_refused_at_start() {
    let scratch = Scratch::new("kafka-limits");
    let server = KafkaServer::start("limits");
    let input = scratch.path("big.jsonl");
    let small = serde_json::json!({
        "specversion": "1.0", "id": "small", "source": "/test", "type": "t", "data": {"x": 1},
    });
    let big = serde_json::json!({
        "specversion": "1.0", "id": "big", "source": "/test", "type": "t",
        "data": {"blob": "x".repeat(1_200_000)},
    });
    std::fs::write(&input, format!("{small}\n{big}\n")).expect("input");
    let dead = scratch.path("dead.jsonl");
    server.topics(&["kfp.limits"]).await;
    let sink = format!("kafka://{}/kfp.limits", server.bootstrap());
    let log = run_ok(
        &[
            "resend",
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
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], "big");
    let reason = dead[0]["deadletterreason"].as_str().expect("reason");
    assert!(reason.to_lowercase().contains("too large"), "{reason}");
    assert_eq!(summaries(&log)[&sink]["retried"], 0, "not retried");
    assert_eq!(
        server
            .consume("kfp.limits", 1, Duration::from_secs(20))
            .len(),
        1
    );

    for (sink, says) in [
        (
            "kafka://127.0.0.1:1/kfp.events".to_owned(),
            "no metadata from 127.0.0.1:1",
        ),
        (
            format!("kafka://{}/kfp.{{nope}}", server.bootstrap()),
            "topic",
        ),
        (
            format!("kafka://{}/kfp!events", server.bootstrap()),
            "not a valid Kafka topic",
        ),
        (
            format!(
                "kafka://{}/t?queue.buffering.max.ms=banana",
                server.bootstrap()
            ),
            "configuration refused",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["resend", &input.display().to_string(), "--sink", &sink])
            .env_clear()
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sink}: {err}");
        assert!(err.contains(says), "{sink}: {err}");
        assert!(err.contains("kafka://"), "names the sink: {err}");
    }
    // Secrets from the command line never reach the log.
    let out = Command::new(BIN)
        .args([
            "resend",
            &input.display().to_string(),
            "--sink",
            &format!("kafka://{}/kfp.limits", server.bootstrap()),
            "--kafka-option",
            "sasl.password=hunter2",
            "--kafka-option",
            "sasl.username=kfp",
        ])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("hunter2"), "{err}");
}

/// The conformance kit (`sink_core::conformance`) against the real Kafka-protocol broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_sink_passes_the_conformance_kit() {
    use sink_core::conformance::{self, Inbox};
    struct Topic<'a>(&'a KafkaServer);
    impl Inbox for Topic<'_> {
        fn received(
            &self,
            want: usize,
            within: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>> {
            let ids = self
                .0
                .consume("kfp.conformance", want, within)
                .iter()
                .map(|r| r.header("ce_id").expect("ce_id").to_owned())
                .collect();
            Box::pin(async move { ids })
        }
    }
    let server = KafkaServer::start("conformance");
    server.topics(&["kfp.conformance"]).await;
    let uri = format!("kafka://{}/kfp.conformance", server.bootstrap());
    conformance::check(&sink_kafka::Factory, &uri, &Topic(&server), "kafka")
        .await
        .expect("conforms");
}
