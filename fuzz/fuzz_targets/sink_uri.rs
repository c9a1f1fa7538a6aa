//! A `--sink` value and its options (filters, name, format, the transport's query): parsed,
//! and what the logs show of it redacted, without a panic; the redacted authority never keeps
//! user-info (what precedes its `@` is masked).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kfp_event_bridge::config::parse_sink_arg(text);
    let shown = kfp_event_bridge::sinks::redact(text);
    let scheme_of = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    };
    if let Some((_, rest)) = shown
        .split_once("://")
        .filter(|(scheme, _)| scheme_of(scheme))
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            assert!(userinfo == "***", "user-info shown: {shown}");
        }
    }
});
