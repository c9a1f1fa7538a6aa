//! `resend`: reads structured CloudEvents (one JSON object per line — a dead-letter file, a
//! `replay` output) and hands them to delivery again, without the dead-letter extensions.

use super::lines::{ReplayCounts, read_line, report_bad_line};
use crate::encode::{DEAD_LETTER_REASON, DEAD_LETTER_SINK};
use cloudevents::event::{Data, EventBuilder, EventBuilderV10};
use cloudevents::{AttributesReader, Event};
use serde_json::value::RawValue;
use sink_core::structured;
use std::collections::HashMap;
use std::io::BufRead;

/// Events handed on together.
const BATCH: usize = 64;

/// Parses every line of `input` as a CloudEvent (the JSON event format) and hands them to `emit`
/// in order, in small batches. Lines that are not CloudEvents are reported by number and skipped.
pub fn resend(
    mut input: impl BufRead,
    mut emit: impl FnMut(Vec<Event>) -> bool,
) -> std::io::Result<ReplayCounts> {
    let mut counts = ReplayCounts::default();
    let mut line = Vec::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(BATCH);
    while read_line(&mut input, &mut line)? {
        counts.lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse(&line) {
            Ok(event) => {
                batch.push(event);
                counts.events += 1;
            }
            Err(err) => {
                counts.bad_lines += 1;
                report_bad_line(counts.lines, counts.bad_lines, &err);
            }
        }
        if batch.len() >= BATCH && !emit(std::mem::take(&mut batch)) {
            return Ok(counts);
        }
    }
    if !batch.is_empty() {
        emit(batch);
    }
    Ok(counts)
}

/// One line as an event without the dead-letter extensions, its JSON data kept as the bytes it
/// was written as (see `structured::is_json`).
fn parse(line: &[u8]) -> Result<Event, String> {
    let mut event = match quick(line) {
        Some(event) => event,
        // Anything the quick path does not take (escaped names, `data_base64`, data without a
        // JSON content type, …) goes through the SDK, which also names what is wrong.
        None => serde_json::from_slice::<Event>(line)
            .map_err(|err| format!("not a CloudEvent in the JSON format: {err}"))?,
    };
    if let Some(Data::Binary(bytes)) = event.data()
        && structured::is_json(event.datacontenttype())
        && serde_json::from_slice::<&RawValue>(bytes).is_err()
    {
        return Err(
            "data_base64 does not hold the JSON its datacontenttype declares; not resent".into(),
        );
    }
    event.remove_extension(DEAD_LETTER_REASON);
    event.remove_extension(DEAD_LETTER_SINK);
    Ok(event)
}

/// The common case — a CloudEvents 1.0 event with JSON data and plain members, as `replay` and
/// the dead-letter sink write them — without building a JSON tree for the data.
fn quick(line: &[u8]) -> Option<Event> {
    let members: HashMap<&str, &RawValue> = serde_json::from_slice(line).ok()?;
    let string = |name: &str| -> Option<Option<String>> {
        match members.get(name) {
            None => Some(None),
            Some(raw) => serde_json::from_str::<String>(raw.get()).ok().map(Some),
        }
    };
    if string("specversion")?.as_deref() != Some("1.0") || members.contains_key("data_base64") {
        return None;
    }
    let mut builder = EventBuilderV10::new()
        .id(string("id")??)
        .source(string("source")??)
        .ty(string("type")??);
    if let Some(subject) = string("subject")? {
        builder = builder.subject(subject);
    }
    if let Some(time) = string("time")? {
        builder = builder.time(time);
    }
    for (&name, raw) in &members {
        if KNOWN.contains(&name) || name == DEAD_LETTER_REASON || name == DEAD_LETTER_SINK {
            continue;
        }
        let text = raw.get();
        builder = match text.as_bytes().first()? {
            b'"' => builder.extension(name, serde_json::from_str::<String>(text).ok()?),
            b't' | b'f' => builder.extension(name, serde_json::from_str::<bool>(text).ok()?),
            _ => builder.extension(name, text.parse::<i64>().ok()?),
        };
    }
    let content_type = string("datacontenttype")?;
    let schema = string("dataschema")?;
    match (members.get("data"), content_type) {
        (Some(data), Some(ct)) if structured::is_json(Some(&ct)) => {
            let data = data.get().as_bytes().to_vec();
            builder = match schema {
                Some(schema) => builder.data_with_schema(ct, schema, data),
                None => builder.data(ct, data),
            };
        }
        // No data and no data attributes (the builder sets those only together with data).
        (None, None) if schema.is_none() => {}
        _ => return None,
    }
    builder.build().ok()
}

/// Members that are not extensions.
const KNOWN: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;

    #[test]
    fn reads_events_strips_dead_letter_marks_and_reports_bad_lines() {
        let input = concat!(
            r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","deadletterreason":"x","deadlettersink":"y","namespace":"n"}"#,
            "\n\n{not json\n",
            r#"{"specversion":"1.0","source":"/s","type":"t"}"#,
            "\n",
            r#"{"specversion":"1.0","id":"b","source":"/s","type":"t","data":{"k":1},"datacontenttype":"application/json"}"#,
            "\n"
        );
        let mut got = Vec::new();
        let counts = resend(input.as_bytes(), |events| {
            got.extend(events);
            true
        })
        .expect("reads");
        assert_eq!(counts.lines, 5);
        assert_eq!(counts.bad_lines, 2, "broken JSON and a missing id");
        assert_eq!(got.iter().map(|e| e.id()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(got[0].extension(DEAD_LETTER_REASON).is_none());
        assert!(got[0].extension(DEAD_LETTER_SINK).is_none());
        assert!(got[0].extension("namespace").is_some());
    }

    fn line(data: serde_json::Value) -> Vec<u8> {
        let event = EventBuilderV10::new()
            .id("4b1d")
            .source("https://kubernetes.default.svc/apis/argoproj.io/v1alpha1/namespaces/ns/workflows/wf")
            .ty("org.kubeflow.pipelines.task.failed")
            .subject("ns/wf/train \"quoted\"")
            .time("2026-03-14T09:00:07Z")
            .extension("partitionkey", "run-1")
            .extension("attempt", 3i64)
            .extension("terminal", true)
            .data_with_schema("application/json", "urn:x:schema", data)
            .build()
            .expect("event");
        structured::to_vec(&event)
    }

    #[test]
    fn the_quick_path_takes_bridge_output_and_writes_it_back_byte_for_byte() {
        let input = line(
            serde_json::json!({"Message": "OOMKilled: \"exit 137\" é\n", "n": [1, 2.5, null]}),
        );
        let quick = quick(&input).expect("the quick path takes it");
        assert!(matches!(quick.data(), Some(Data::Binary(_))));
        assert_eq!(structured::to_vec(&quick), input);
        // The SDK reads the same event (its data as a tree).
        let sdk: Event = serde_json::from_slice(&input).expect("sdk");
        assert_eq!(structured::to_vec(&sdk), input);
        assert_eq!(
            sdk.iter_extensions().count(),
            quick.iter_extensions().count()
        );
        assert_eq!(
            sink_core::binary::body(&sdk),
            sink_core::binary::body(&quick)
        );
    }

    #[test]
    fn data_base64_declared_json_is_resent_as_json_or_refused() {
        let valid = br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"eyJrIjoxfQ=="}"#;
        let event = parse(valid).expect("valid JSON inside");
        let text = String::from_utf8(structured::to_vec(&event)).expect("utf-8");
        assert!(text.ends_with(r#""data":{"k":1}}"#), "{text}");
        let invalid = br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"AP8="}"#;
        let err = parse(invalid).expect_err("not JSON");
        assert!(err.contains("data_base64 does not hold the JSON"), "{err}");
        let binary = br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AP8="}"#;
        let text =
            String::from_utf8(structured::to_vec(&parse(binary).expect("binary"))).expect("utf-8");
        assert!(text.ends_with(r#""data_base64":"AP8="}"#), "{text}");
    }

    #[test]
    fn what_the_quick_path_leaves_goes_through_the_sdk() {
        for input in [
            // data without a content type, a string extension with an escaped name, version 0.3
            r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"k":1}}"#,
            r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","\u0078ext":"v"}"#,
            r#"{"specversion":"0.3","id":"a","source":"/s","type":"t"}"#,
        ] {
            assert!(quick(input.as_bytes()).is_none(), "{input}");
            parse(input.as_bytes()).expect(input);
        }
        let err = parse(br#"{"specversion":"1.0","id":"a","type":"t"}"#).expect_err("no source");
        assert!(
            err.starts_with("not a CloudEvent in the JSON format: "),
            "{err}"
        );
    }
}
