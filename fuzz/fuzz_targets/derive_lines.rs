//! Bytes as a recording: lines decoded, derived and encoded, with the derivation's invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    kfp_event_bridge_fuzz::check(&lines);
});
