//! The router, table-driven: `--sink` filters, templates and placeholders, and the merged plan
//! (flags over config file over defaults) with errors that name the sink and the field.

use clap::Parser;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use kfp_event_bridge::cli::{Cli, Command};
use kfp_event_bridge::config::{Filter, parse_sink_arg};
use sink_core::Template;
use sink_core::template::Var;
use std::time::Duration;

fn event(ty: &str, namespace: Option<&str>, pipeline: Option<&str>) -> Event {
    let mut b = EventBuilderV10::new()
        .id("1")
        .source("/s")
        .ty(format!("org.kubeflow.pipelines.{ty}"))
        .extension("workflow", "wf-1");
    if let Some(ns) = namespace {
        b = b.extension("namespace", ns);
    }
    if let Some(p) = pipeline {
        b = b.extension("pipeline", p);
    }
    b.build().expect("event")
}

#[test]
fn filters_select_by_type_namespace_and_pipeline() {
    let ev = event("task.failed", Some("team-a"), Some("train-xgb"));
    let plain_argo = event("run.succeeded", Some("argo"), None);
    let cases: &[(&str, &Event, bool)] = &[
        ("stdout", &ev, true),
        ("stdout?types=task.*", &ev, true),
        ("stdout?types=run.*", &ev, false),
        ("stdout?types=run.*,*.failed", &ev, true),
        ("stdout?types=org.kubeflow.pipelines.task.failed", &ev, true),
        ("stdout?namespaces=team-*", &ev, true),
        ("stdout?namespaces=team-b,kubeflow", &ev, false),
        ("stdout?pipelines=train-*", &ev, true),
        ("stdout?pipelines=train-*", &plain_argo, false),
        (
            "stdout?types=task.failed&namespaces=team-a&pipelines=train-xgb",
            &ev,
            true,
        ),
        ("stdout?types=task.failed&namespaces=team-b", &ev, false),
        ("stdout?namespaces=team%2Da", &ev, true),
    ];
    for (arg, event, want) in cases {
        let spec = parse_sink_arg(arg).expect(arg);
        assert_eq!(spec.filter.matches(event), *want, "{arg}");
        assert_eq!(spec.uri, "stdout", "{arg}: routing keys leave the URI");
    }
}

#[test]
fn sink_arguments_keep_transport_query_and_take_a_name() {
    let spec =
        parse_sink_arg("https://h/p?mode=structured&types=run.*&code=x&name=hooks").expect("ok");
    assert_eq!(spec.uri, "https://h/p?mode=structured&code=x");
    assert_eq!(spec.name.as_deref(), Some("hooks"));
    assert_eq!(spec.filter.types, ["run.*"]);
    assert_eq!(spec.options, None);
    for (arg, want) in [
        ("https://h/?types=", "types: empty pattern"),
        ("https://h/?types=a,,b", "types: empty pattern"),
        ("https://h/?name=", "name: must not be empty"),
        ("?types=run.*", "empty sink URI"),
    ] {
        let err = parse_sink_arg(arg).expect_err(arg).to_string();
        assert!(err.starts_with("--sink "), "{arg}: {err}");
        assert!(err.contains(want), "{arg}: {err}");
    }
}

#[test]
fn templates_render_values_escaped_and_placeholders_for_missing_ones() {
    let ev = event("task.failed", Some("team a"), Some("x.y"));
    let plain = event("run.started", None, None);
    // As a subject would: values become single tokens, except `{type}`, which is two on purpose.
    let nats_token = |var: Var, v: &str, out: &mut String| {
        let keep_dots = var == Var::Type;
        out.extend(v.chars().map(|c| match c {
            '.' if keep_dots => '.',
            '.' | ' ' => '_',
            c => c,
        }))
    };
    let cases: &[(&str, &Event, &str)] = &[
        ("kfp.{namespace}.{type}", &ev, "kfp.team_a.task.failed"),
        ("kfp.{pipeline}", &ev, "kfp.x_y"),
        ("kfp.{namespace}.{pipeline}.{kfprunid}", &plain, "kfp._._._"),
        ("{workflow}", &plain, "wf-1"),
        ("fixed", &plain, "fixed"),
    ];
    for (text, event, want) in cases {
        let t = Template::parse(text).expect(text);
        assert_eq!(t.render(event, nats_token), *want, "{text}");
    }
}

fn plan(args: &[&str]) -> Result<kfp_event_bridge::config::DeliveryPlan, String> {
    let mut argv = vec!["kfp-event-bridge", "replay", "x.jsonl"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Command::Replay(replay) = cli.command else {
        panic!("parsed as replay")
    };
    kfp_event_bridge::config::delivery_plan(&replay.delivery).map_err(|e| e.to_string())
}

#[test]
fn the_plan_merges_flags_over_the_file_over_defaults() {
    let dir = std::env::temp_dir().join(format!("kfp-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        "sinks:\n  - uri: file:/tmp/a.jsonl\n    namespaces: [team-a]\ndead_letter: file:/tmp/dead.jsonl\nretry:\n  initial: 1s\n  max: 10s\nlanes:\n  window: 8\nshutdown_timeout: 5s\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let p = plan(&["--config", &f]).expect("plan");
    assert_eq!(p.sinks.len(), 1);
    assert_eq!(
        p.sinks[0].filter,
        Filter {
            namespaces: vec!["team-a".into()],
            ..Filter::default()
        }
    );
    assert_eq!(
        p.dead_letter.expect("dead letter").uri,
        "file:/tmp/dead.jsonl"
    );
    assert_eq!(p.retry.initial, Duration::from_secs(1));
    assert_eq!(p.retry.max, Duration::from_secs(10));
    assert_eq!(p.lanes.window, 8);
    assert_eq!(p.lanes.capacity, 10_000);
    assert_eq!(p.shutdown_timeout, Duration::from_secs(5));
    let p = plan(&[
        "--config",
        &f,
        "--retry-initial",
        "300ms",
        "--max-in-flight",
        "2",
    ])
    .expect("plan");
    assert_eq!(p.retry.initial, Duration::from_millis(300));
    assert_eq!(p.lanes.window, 2);
    // No sink anywhere: standard output.
    assert_eq!(plan(&[]).expect("plan").sinks[0].uri, "stdout");
    for (args, want) in [
        (vec!["--retry-initial", "90s"], "max at least initial"),
        (vec!["--retry-multiplier", "0.5"], "retry multiplier"),
        (vec!["--max-in-flight", "0"], "lanes"),
        // Refused by the command line itself (a typed flag), naming the flag and the unit.
        (
            vec!["--shutdown-timeout", "10 parsecs"],
            "--shutdown-timeout",
        ),
    ] {
        let err = plan(&args).expect_err("refused");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
