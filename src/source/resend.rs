//! `resend`: reads structured CloudEvents (one JSON object per line — a dead-letter file, a
//! `replay` output) and hands them to delivery again, without the dead-letter extensions.

use super::replay::{ReplayCounts, read_line, report_bad_line};
use crate::delivery::{DEAD_LETTER_REASON, DEAD_LETTER_SINK};
use cloudevents::Event;
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
        match serde_json::from_slice::<Event>(&line) {
            Ok(mut event) => {
                event.remove_extension(DEAD_LETTER_REASON);
                event.remove_extension(DEAD_LETTER_SINK);
                batch.push(event);
                counts.events += 1;
            }
            Err(err) => {
                counts.bad_lines += 1;
                let err = format!("not a CloudEvent in the JSON format: {err}");
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
}
