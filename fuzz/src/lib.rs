//! What the fuzz targets share: feeding observation lines through a fresh deriver and the
//! invariants every derivation must keep, asserted (a violation is a crash libFuzzer keeps).

use kfp_event_bridge::derive::{DeriveConfig, Deriver};
use kfp_event_bridge::encode::{self, EncodeConfig};
use kfp_event_bridge::source::recording;
use std::collections::BTreeMap;

/// Derives `lines` with a fresh deriver; per fact its CloudEvent id, and checks on the way that
/// every fact encodes to an event whose bindings agree ([`check_bindings`]).
pub fn derive_ids(lines: &[&[u8]]) -> Vec<(String, bool, String)> {
    let mut deriver = Deriver::new(DeriveConfig::default());
    let mut out = Vec::new();
    for line in lines {
        let Ok(Some(observed)) = recording::decode(line) else {
            continue;
        };
        for fact in deriver.observe(&observed) {
            let event =
                encode::encode(&fact, &EncodeConfig::default()).expect("facts always encode");
            check_bindings(&event);
            let bytes = sink_core::structured::to_vec(&event);
            let back: serde_json::Value =
                serde_json::from_slice(&bytes).expect("an encoded event is JSON");
            let id = back["id"].as_str().expect("an event has an id").to_owned();
            let key = fact.key();
            let attempt = format!("{}/{}/{}", key.workflow_uid, key.node_id, key.retries);
            out.push((id, fact.kind.is_terminal(), attempt));
        }
    }
    out
}

/// The invariants of one derivation of `lines`: no id twice, at most one terminal fact per run
/// or task attempt, and the same ids in the same order when derived again.
pub fn check(lines: &[&[u8]]) {
    let first = derive_ids(lines);
    let mut seen = std::collections::BTreeSet::new();
    let mut terminals: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, terminal, attempt) in &first {
        assert!(seen.insert(id.as_str()), "id {id} twice");
        if *terminal {
            let n = terminals.entry(attempt.as_str()).or_default();
            *n += 1;
            assert!(*n <= 1, "two terminal facts for {attempt}");
        }
    }
    let again = derive_ids(lines);
    assert_eq!(
        first.iter().map(|f| &f.0).collect::<Vec<_>>(),
        again.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "ids differ between two derivations"
    );
}

/// Every binding's bytes of one event, checked against each other: the structured JSON reads
/// back through the CloudEvents SDK as the same event; each binary-mode attribute is the
/// structured member's value (times as the same instant), and as a header value
/// (percent-encoded) it is printable ASCII that decodes back to it; the binary body is the
/// structured `data`; a batch holds the structured event as it is; a CDEvent made of it is
/// JSON with a CDEvents type.
pub fn check_bindings(event: &sink_core::Event) {
    use serde_json::Value;
    let bytes = sink_core::structured::to_vec(event);
    let structured: Value = serde_json::from_slice(&bytes).expect("structured mode is JSON");
    let read: sink_core::Event =
        serde_json::from_slice(&bytes).expect("the SDK reads the structured form");
    // The SDK keeps the data it reads as bytes: compared as JSON, the attributes as they are.
    assert_eq!(
        sink_core::binary::attributes(&read),
        sink_core::binary::attributes(event),
        "the SDK reads back other attributes"
    );
    {
        use cloudevents::AttributesReader;
        assert_eq!(read.datacontenttype(), event.datacontenttype());
    }
    let json_of = |e: &sink_core::Event| -> Option<Value> {
        match e.data()? {
            cloudevents::Data::Json(v) => Some(v.clone()),
            cloudevents::Data::Binary(b) => serde_json::from_slice(b).ok(),
            cloudevents::Data::String(t) => serde_json::from_str(t).ok(),
        }
    };
    assert_eq!(
        json_of(&read),
        json_of(event),
        "the SDK reads back other data"
    );
    for (name, value) in sink_core::binary::attributes(event) {
        let member = match &structured[name] {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => panic!("attribute {name}: structured member {other}"),
        };
        if name == "time" {
            let parse =
                |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("time is RFC 3339");
            assert_eq!(
                parse(&member),
                parse(&value),
                "time differs between bindings"
            );
        } else {
            assert_eq!(member, value, "attribute {name} differs between bindings");
        }
        let header = sink_core::binary::percent_encode(&value);
        assert!(
            header
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b' ' && b != b'"'),
            "header value of {name} not printable ASCII: {header:?}"
        );
        let decoded = percent_encoding::percent_decode_str(&header)
            .decode_utf8()
            .expect("a header value decodes to UTF-8");
        assert_eq!(
            decoded, value,
            "header value of {name} does not decode back"
        );
    }
    let body = sink_core::binary::body(event);
    if structured.get("data").is_some() {
        let data: Value = serde_json::from_slice(&body).expect("the binary body is JSON");
        assert_eq!(
            data, structured["data"],
            "binary body and structured data differ"
        );
    }
    let batch: Value = serde_json::from_slice(&sink_core::structured::batch_to_vec([event, event]))
        .expect("a batch is JSON");
    assert_eq!(
        batch,
        Value::Array(vec![structured.clone(), structured]),
        "a batch holds other events"
    );
    if let Ok(Some(cd)) = kfp_event_bridge::encode::cdevents::from_event(event) {
        let v: Value =
            serde_json::from_slice(&sink_core::structured::to_vec(&cd)).expect("a CDEvent is JSON");
        let ty = v["type"].as_str().expect("a CDEvent has a type");
        assert!(
            ty.starts_with("dev.cdevents.") || ty.starts_with("dev.cdeventsx."),
            "CDEvent type {ty}"
        );
    }
}
