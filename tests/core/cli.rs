//! The binary as a user runs it: replay from a file or standard input, bad lines reported with
//! their numbers and the exit code, the file sink appending.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kfp-event-bridge");

fn recording(name: &str) -> String {
    format!("{}/examples/recordings/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with `args` (`replay -` among them), `input` on its standard input.
fn with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("finishes")
}

#[test]
fn bad_lines_are_reported_by_number_skipped_and_set_the_exit_code() {
    let good = std::fs::read(recording("kfp-v1-success.jsonl")).expect("recording");
    let mut input =
        b"{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}}\n".to_vec();
    input.extend_from_slice(&good);
    input.extend_from_slice(b"{truncated\n\xff\xfe\n");
    let out = with_stdin(&["replay", "-"], &input);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in ["line=1", "line=12", "line=13"] {
        assert!(
            stderr.contains(line),
            "stderr does not report {line}: {stderr}"
        );
    }
    assert!(
        stderr.contains("unsupported object") && stderr.contains("not valid UTF-8"),
        "{stderr}"
    );
    let events = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        events.lines().count(),
        7,
        "the good lines still produce their events"
    );
}

#[test]
fn file_sink_appends_and_stdout_stays_empty() {
    let dir = std::env::temp_dir().join(format!("kfp-bridge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_file = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&out_file);
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args([
                "--log",
                "warn",
                "replay",
                &recording("kfp-v2-success.jsonl"),
            ])
            .arg("--sink")
            .arg(format!("file:{}", out_file.display()))
            .output()
            .expect("binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let text = std::fs::read_to_string(&out_file).expect("sink file");
    assert_eq!(text.lines().count(), 18, "two replays of 9 events appended");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn unknown_sinks_and_bad_overrides_are_configuration_errors() {
    for args in [
        vec!["replay", "x.jsonl", "--sink", "mqtt://user:secret@broker/"],
        vec![
            "replay",
            "x.jsonl",
            "--ce-overrides",
            "{\"extensions\":{\"Bad-Name\":\"x\"}}",
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("binary runs");
        assert_eq!(
            out.status.code(),
            Some(2),
            "configuration errors exit like usage errors"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("secret"),
            "credentials leaked into logs: {stderr}"
        );
    }
}

/// `--watch-timeout` outside 1 s … 1 h is refused before anything connects, naming the range.
#[test]
fn a_watch_timeout_out_of_range_is_refused() {
    for value in ["0s", "500ms", "2h"] {
        let out = Command::new(BIN)
            .args(["record", "-", "--watch-timeout", value])
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("between 1s and 1h"), "{value}: {stderr}");
    }
}

/// With Argo's node status offloading on, every large workflow is offloaded: the first one is a
/// warning that says where the rest are counted, the others are debug lines, not a warning each.
#[test]
fn offloaded_workflows_warn_once() {
    let one = std::fs::read_to_string(recording("offloaded-and-deleted-workflows.jsonl"))
        .expect("recording");
    let uid = "8e0a2c4e-6a8c-4e0a-8c4e-6a8c0e2a4c6e";
    let mut input = String::new();
    for copy in 0..3 {
        input += &one
            .replace(uid, &format!("{}{copy:04}", &uid[..uid.len() - 4]))
            .replace("big-sweep-9f3kd", &format!("big-sweep-copy{copy}"));
    }
    let run = |log: &str| {
        let out = with_stdin(&["--log", log, "replay", "-"], input.as_bytes());
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run("info");
    let warned: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("node status offloaded"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("WARN") && warned[0].contains("big-sweep-copy0"));
    assert!(warned[0].contains("kfp_event_bridge_offloaded_workflows_total"));
    let all = run("debug");
    for copy in 0..3 {
        assert!(
            all.contains(&format!("big-sweep-copy{copy}: node status offloaded")),
            "{all}"
        );
    }
}

/// `--max-data-bytes`: a payload over the bound loses its parameters, then long messages are
/// clipped (at a character boundary, marked with `…`), and `Truncated` says what was cut.
#[test]
fn oversize_payloads_lose_parameters_then_long_messages() {
    let recorded = std::fs::read_to_string(recording("kfp-v2-oomkilled.jsonl")).expect("recording");
    let long = "é".repeat(1500);
    // The task's message is its pod's.
    let pod = "main: OOMKilled (exit code 137)";
    let input = recorded.replace(pod, &format!("{pod}: {long}"));
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = with_stdin(args, input.as_bytes());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("event"))
            .collect()
    };
    let whole = events(&["replay", "-"]);
    assert!(whole.iter().all(|e| e["data"].get("Truncated").is_none()));
    assert!(whole.iter().any(|e| e["data"].get("Parameters").is_some()));
    let bounded = events(&["replay", "-", "--max-data-bytes", "1200"]);
    assert_eq!(bounded.len(), whole.len());
    let failed = bounded
        .iter()
        .find(|e| e["type"] == "org.kubeflow.pipelines.task.failed")
        .expect("task.failed");
    let data = &failed["data"];
    assert_eq!(
        data["Truncated"],
        serde_json::json!(["Parameters", "Message"])
    );
    assert!(data.get("Parameters").is_none());
    let message = data["Message"].as_str().expect("message");
    assert!(
        message.starts_with("Failed node ")
            && message.contains("137): é")
            && message.ends_with('…'),
        "{message}"
    );
    assert!(
        message.len() <= 1200 / 4 + '…'.len_utf8(),
        "{}",
        message.len()
    );
    for event in &bounded {
        let size = serde_json::to_vec(&event["data"]).expect("json").len();
        if event["data"].get("Truncated").is_none() {
            assert!(size <= 1200, "{size}: {event}");
        }
    }
}
