//! `asyncapi`: the AsyncAPI 3.0 document of what a configuration publishes, through the binary
//! as a user runs it — a server, a channel (the destination template, its variables as
//! parameters) and one message per event type for every sink that is a message channel; the
//! payload is the shipped data schema; headers in each binding's form; no secret anywhere; and
//! every sink option that changes what is published changes the document.

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kfp-event-bridge");

fn asyncapi(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["--log", "error", "asyncapi"])
        .args(args)
        .env_clear()
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the document is JSON")
}

fn sinks(uris: &[&str]) -> Value {
    let args: Vec<&str> = uris.iter().flat_map(|u| ["--sink", *u]).collect();
    asyncapi(&args)
}

fn only_channel(doc: &Value) -> (&String, &Value) {
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 1, "{channels:?}");
    channels.iter().next().unwrap()
}

/// The messages of a channel, resolved in `components.messages`.
fn messages<'a>(doc: &'a Value, channel: &Value) -> Vec<&'a Value> {
    channel["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| {
            let path = r["$ref"].as_str().unwrap();
            let name = path.strip_prefix("#/components/messages/").unwrap();
            &doc["components"]["messages"][name]
        })
        .collect()
}

#[test]
fn each_transport_gets_a_server_a_channel_and_its_messages() {
    let cases = [
        (
            "kafka://kafka-1:9092,kafka-2:9092/kfp.{namespace}?mode=binary",
            "kafka",
            "kafka-1:9092",
            "kfp.{namespace}",
            "ce_",
        ),
        (
            "nats://nats:4222/kfp.{namespace}.{type}?mode=binary",
            "nats",
            "nats:4222",
            "kfp.{namespace}.{type}",
            "ce-",
        ),
        (
            "amqp://bridge@rabbit:5672/%2f?exchange=kfp&routing_key=kfp.{namespace}.{type}&mode=binary",
            "amqp",
            "rabbit:5672",
            "kfp.{namespace}.{type}",
            "ce-",
        ),
        (
            "https://hooks.example.com/kfp/{namespace}?mode=binary",
            "https",
            "hooks.example.com",
            "/kfp/{namespace}",
            "ce-",
        ),
    ];
    let data_schema: Value = {
        let text = std::fs::read_to_string(format!(
            "{}/schemas/event-data.v1.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("$schema");
        v
    };
    for (uri, protocol, host, address, prefix) in cases {
        let doc = sinks(&[uri]);
        assert_eq!(doc["asyncapi"], "3.0.0");
        let servers = doc["servers"].as_object().unwrap();
        assert_eq!(servers.len(), 1);
        let server = servers.values().next().unwrap();
        assert_eq!(server["protocol"], protocol, "{uri}");
        assert_eq!(server["host"], host, "{uri}");
        let (_, channel) = only_channel(&doc);
        assert_eq!(channel["address"], address, "{uri}");
        // Every template variable is a parameter; {type} lists the types.
        let vars: BTreeSet<&str> = ["namespace", "type"]
            .into_iter()
            .filter(|v| address.contains(&format!("{{{v}}}")))
            .collect();
        let params: BTreeSet<&str> = channel["parameters"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(params, vars, "{uri}");
        if vars.contains("type") {
            assert_eq!(
                channel["parameters"]["type"]["enum"]
                    .as_array()
                    .unwrap()
                    .len(),
                9
            );
        }
        let messages = messages(&doc, channel);
        assert_eq!(messages.len(), 9, "{uri}: one message per event type");
        let titles: BTreeSet<&str> = messages
            .iter()
            .map(|m| m["title"].as_str().unwrap())
            .collect();
        assert!(titles.contains("org.kubeflow.pipelines.task.failed"));
        for m in &messages {
            // Binary mode: attributes as headers in the binding's form.
            assert_eq!(m["contentType"], "application/json");
            let headers = m["headers"]["properties"].as_object().unwrap();
            for attribute in ["id", "source", "type", "specversion", "partitionkey"] {
                assert!(
                    headers.contains_key(&format!("{prefix}{attribute}")),
                    "{uri}: {attribute}"
                );
            }
            assert_eq!(headers[&format!("{prefix}type")]["const"], m["title"]);
            assert_eq!(m["payload"]["$ref"], "#/components/schemas/EventData");
        }
    }
    // The payload schema is the shipped data schema.
    let doc = sinks(&[cases[0].0]);
    let mut shipped = data_schema;
    assert_eq!(doc["components"]["schemas"]["EventData"], shipped.take());
    // Protocol bindings where AsyncAPI defines them.
    let kafka = sinks(&["kafka://k:9092/kfp-events"]);
    let (_, channel) = only_channel(&kafka);
    assert_eq!(channel["bindings"]["kafka"]["topic"], "kfp-events");
    assert!(messages(&kafka, channel)[0]["bindings"]["kafka"]["key"].is_object());
    let amqp = sinks(&["amqps://bridge@rabbit/%2f?exchange=kfp&routing_key=k&declare=topic"]);
    let (_, channel) = only_channel(&amqp);
    assert_eq!(channel["bindings"]["amqp"]["exchange"]["name"], "kfp");
    assert_eq!(channel["bindings"]["amqp"]["exchange"]["type"], "topic");
    let op = amqp["operations"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(op["bindings"]["amqp"]["deliveryMode"], 2);
    assert_eq!(op["action"], "send");
}

#[test]
fn filters_formats_and_modes_shape_the_messages() {
    // A filtered route: only the types it receives.
    let doc = sinks(&["nats://n:4222/kfp.{type}?types=task.failed,run.*&name=alerts"]);
    let (id, channel) = only_channel(&doc);
    assert_eq!(id, "alerts");
    let titles: BTreeSet<String> = messages(&doc, channel)
        .iter()
        .map(|m| m["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        titles,
        [
            "org.kubeflow.pipelines.run.queued",
            "org.kubeflow.pipelines.run.started",
            "org.kubeflow.pipelines.run.succeeded",
            "org.kubeflow.pipelines.run.failed",
            "org.kubeflow.pipelines.task.failed"
        ]
        .map(String::from)
        .into()
    );
    // CDEvents: the CDEvents types, `{type}` as the CDEvent's subject.predicate.
    let doc = sinks(&["nats://n:4222/cd.{type}?format=cdevents&types=task.*"]);
    let (_, channel) = only_channel(&doc);
    let mut shorts: Vec<&str> = channel["parameters"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    shorts.sort();
    assert_eq!(
        shorts,
        [
            "kfp-taskrun.skipped",
            "kfp-taskrun.warned",
            "taskrun.finished",
            "taskrun.started"
        ]
    );
    let custom = &doc["components"]["schemas"]["KfpTaskrunSkipped"];
    assert_eq!(
        custom["$id"],
        "urn:kfp-event-bridge:schema:cdevents:kfp-taskrun-skipped:0.1.0"
    );
    // Structured and batch modes: the envelope, with the data schema as its data.
    for (uri, content_type) in [
        (
            "kafka://k:9092/t?mode=structured",
            "application/cloudevents+json",
        ),
        (
            "https://h/x?mode=batch",
            "application/cloudevents-batch+json",
        ),
    ] {
        let doc = sinks(&[uri]);
        let (_, channel) = only_channel(&doc);
        for m in messages(&doc, channel) {
            assert_eq!(m["contentType"], content_type, "{uri}");
            assert!(m.get("headers").is_none(), "{uri}: no attribute headers");
            let envelope = if content_type.contains("batch") {
                &m["payload"]["items"]
            } else {
                &m["payload"]
            };
            assert_eq!(envelope["properties"]["type"]["const"], m["title"]);
            assert_eq!(
                envelope["properties"]["data"]["$ref"],
                "#/components/schemas/EventData"
            );
        }
    }
    // Standard output and files are not message channels: named, not described.
    let doc = sinks(&["stdout", "nats://n:4222/x"]);
    assert_eq!(doc["channels"].as_object().unwrap().len(), 1);
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("stdout")
    );
}

#[test]
fn no_secret_reaches_the_document() {
    let dir = std::env::temp_dir().join(format!("kfp-asyncapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bridge.yaml");
    std::fs::write(
        &config,
        "sinks:\n  - uri: kafka://k:9093/t\n    name: analytics\n    options:\n      sasl.username: bridge\n      sasl.password_file: /nonexistent/kafka-password\n      security.protocol: SASL_SSL\n",
    )
    .unwrap();
    let doc = asyncapi(&[
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "nats://alice:hunter2-nats@n:4222/x",
        "--sink",
        "amqp://bridge:hunter2-amqp@r:5672/%2f?exchange=e&routing_key=k",
        "--sink",
        "https://h/x?token=hunter2-query",
    ]);
    let text = doc.to_string();
    for secret in ["hunter2", "alice"] {
        assert!(!text.contains(secret), "{secret} in the document");
    }
    // Secret files are not read to describe a sink (the one named here does not exist).
    assert!(text.contains("SASL_SSL"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_option_that_changes_what_is_published_changes_the_document() {
    let pairs = [
        ("kafka://k:9092/t", "kafka://k:9092/t?mode=structured"),
        ("kafka://k:9092/t", "kafka://k:9092/t?key=none"),
        ("kafka://k:9092/t", "kafka://k:9092/u"),
        ("kafka://k:9092/t", "kafka://k:9092/t?security.protocol=SSL"),
        ("kafka://k:9092/t", "kafka://k:9092/t?format=cdevents"),
        ("kafka://k:9092/t", "kafka://k:9092/t?types=run.*"),
        ("kafka://k:9092/t", "kafka://k2:9092/t"),
        ("nats://n:4222/s", "nats://n:4222/s?mode=binary"),
        ("nats://n:4222/s", "nats://n:4222/s?namespaces=team-*"),
        ("nats://n:4222/s", "nats://n:4222/s?pipelines=etl"),
        ("nats://n:4222/s", "nats://n:4222/s?jetstream=false"),
        ("nats://n:4222/s", "nats://n:4222/s.{namespace}"),
        ("nats://n:4222/s", "tls://n:4222/s"),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k",
            "amqp://u@r/%2f?exchange=e&routing_key=k&mode=structured",
        ),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k",
            "amqp://u@r/%2f?exchange=f&routing_key=k",
        ),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k",
            "amqp://u@r/%2f?exchange=e&routing_key=k.{type}",
        ),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k",
            "amqp://u@r/%2f?exchange=e&routing_key=k&header_prefix=cloudEvents_",
        ),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k",
            "amqp://u@r/%2f?exchange=e&routing_key=k&declare=topic",
        ),
        (
            "amqp://u@r/%2f?exchange=e&routing_key=k&declare=topic",
            "amqp://u@r/%2f?exchange=e&routing_key=k&durable=false&declare=topic",
        ),
        ("https://h/x", "https://h/x?mode=structured"),
        ("https://h/x", "https://h/x?mode=batch"),
        ("https://h/x", "https://h/y"),
        ("https://h/x", "http://h/x"),
    ];
    // Compared without the servers' descriptions, which show each URI (redacted) and so would
    // differ for any change of its text: what must differ is what the document says is
    // published.
    let described = |uri: &str| {
        let mut doc = sinks(&[uri]);
        for part in ["servers", "channels"] {
            for object in doc[part].as_object_mut().unwrap().values_mut() {
                object.as_object_mut().unwrap().remove("description");
            }
        }
        doc
    };
    for (a, b) in pairs {
        assert_ne!(
            described(a),
            described(b),
            "{b} publishes differently from {a}, the document must say so"
        );
    }
    // A sanity check of the comparison itself: the same sink under another name is the same.
    assert_eq!(
        described("nats://n:4222/s?name=a"),
        described("nats://n:4222/s?name=a")
    );
    // The encoding flags that change the events change the document: the dataschema the events
    // carry, K_CE_OVERRIDES' extensions.
    let with = |extra: &[&str]| {
        let mut args = vec!["--sink", "nats://n:4222/s?mode=binary"];
        args.extend(extra);
        asyncapi(&args)
    };
    let doc = with(&["--dataschema", "https://example.com/my-schema"]);
    let text = doc.to_string();
    assert!(text.contains("https://example.com/my-schema"));
    assert!(!text.contains("urn:kfp-event-bridge:schema:event-data:v1\"}"));
    let doc = with(&["--ce-overrides", r#"{"extensions":{"cluster":"east"}}"#]);
    let (_, channel) = only_channel(&doc);
    for m in messages(&doc, channel) {
        assert!(m["headers"]["properties"]["ce-cluster"].is_object());
    }
    // The type prefix is what consumers match on.
    assert_ne!(
        sinks(&["nats://n:4222/s"]),
        asyncapi(&["--sink", "nats://n:4222/s", "--type-prefix", "org.example"])
    );
}

#[test]
fn sinks_whose_names_map_to_one_key_are_all_described() {
    let doc = sinks(&[
        "nats://n:4222/s?name=my%20sink!",
        "nats://n:4222/t?name=my_sink_",
        "nats://n:4222/u?name=nats-4",
        "nats://n:4222/v",
    ]);
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(
        channels.len(),
        4,
        "{:?}",
        channels.keys().collect::<Vec<_>>()
    );
    let addresses: BTreeSet<&str> = channels
        .values()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, BTreeSet::from(["s", "t", "u", "v"]));
    assert_eq!(doc["servers"].as_object().unwrap().len(), 4);
}
