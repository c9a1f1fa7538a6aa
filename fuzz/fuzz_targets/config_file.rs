//! The `--config` YAML file: any text read as the config file, and each sink in it parsed as a
//! `--sink` value is; errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(file) = serde_yaml::from_str::<kfp_event_bridge::config::ConfigFile>(text) {
        for sink in &file.sinks {
            let _ = kfp_event_bridge::config::parse_sink_arg(&sink.uri);
        }
        if let Some(dead) = &file.dead_letter {
            let _ = kfp_event_bridge::config::parse_sink_arg(dead);
        }
    }
});
