//! A sink added from outside: the spool sink passes the conformance kit, and registered next to
//! the built-in sinks it receives what `replay` publishes — with no other sink crate, and
//! nothing in the core, changed.

use clap::Parser;
use kfp_event_bridge::cli::{Cli, Command};
use sink_core::conformance::{self, Inbox};
use spool_sink::{SpoolFactory, spooled};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spool-sink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Spooled(PathBuf);

impl Inbox for Spooled {
    fn received(
        &self,
        _want: usize,
        _within: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        let ids = spooled(&self.0)
            .iter()
            .map(|bytes| {
                let event: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
                event["id"].as_str().expect("id").to_owned()
            })
            .collect();
        Box::pin(async move { ids })
    }
}

#[tokio::test]
async fn the_spool_sink_passes_the_conformance_kit() {
    let dir = scratch("kit");
    let uri = format!("spool:{}", dir.display());
    conformance::check(&SpoolFactory, &uri, &Spooled(dir.clone()), "spool")
        .await
        .expect("conforms");
    // A directory that cannot be made fails at once, not later.
    conformance::check_unreachable(&SpoolFactory, "spool:/proc/no-such/dir")
        .await
        .expect("fails in bounded time");
}

#[tokio::test]
async fn registered_next_to_the_built_in_sinks_it_gets_what_replay_publishes() {
    let dir = scratch("replay");
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/recordings/kfp-v2-success.jsonl"
    );
    let sink = format!("spool:{}?prefix=ev-&types=run.*", dir.display());
    let cli = Cli::try_parse_from(["kfp-event-bridge", "replay", "--sink", &sink, recording])
        .expect("flags");
    let Command::Replay(args) = cli.command else {
        panic!("replay")
    };
    // The built-in build does not know `spool:`…
    let builtin = kfp_event_bridge::sinks::builtin();
    assert!(builtin.factory("spool:/x").is_none());
    let err = kfp_event_bridge::commands::replay::replay_with(&builtin, &args)
        .await
        .expect_err("unsupported");
    assert!(
        err.to_string().contains("unsupported sink \"spool\""),
        "{err}"
    );
    // …registered, it is one sink among the others.
    let mut registry = kfp_event_bridge::sinks::builtin();
    registry.register(SpoolFactory);
    let (_, report) = kfp_event_bridge::commands::replay::replay_with(&registry, &args)
        .await
        .expect("replays");
    let types: Vec<String> = spooled(&dir)
        .iter()
        .map(|bytes| {
            let event: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
            event["type"].as_str().expect("type").to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "org.kubeflow.pipelines.run.queued",
            "org.kubeflow.pipelines.run.started",
            "org.kubeflow.pipelines.run.succeeded"
        ],
        "the router's filter applies to it as to any sink"
    );
    assert_eq!(report.sinks.len(), 1);
    assert_eq!(report.sinks[0].delivered, 3);
    assert!(
        report.sinks[0].name.starts_with("spool:"),
        "{}",
        report.sinks[0].name
    );
    // Its harmless option is shown in its name, as the built-in sinks show theirs.
    assert!(
        report.sinks[0].name.contains("prefix=ev-"),
        "{}",
        report.sinks[0].name
    );
}
