//! `resend` input (CloudEvents as JSON lines, a dead-letter file): any bytes read without a
//! panic, and every event it accepts encodes back to JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kfp_event_bridge::source::resend::resend(data, |events| {
        for event in &events {
            let bytes = sink_core::structured::to_vec(event);
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("resent events are JSON");
        }
        true
    });
});
