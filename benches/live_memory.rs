//! Memory of the live bridge tracking many workflows: starts the fake apiserver in this process
//! with RUNNING synthetic running workflows and FINISHED synthetic finished ones (most
//! Succeeded, one in twenty Failed, ended ten minutes ago: inside the default retention), NODES
//! task nodes each, runs the release binary against it (file checkpoint, file sink taking only
//! `run.*` events, the admin server on a free port), waits until the bridge is idle and reads
//! its peak and current RSS from `/proc`.
//!
//! Idle: every workflow's `run.started` and every finished one's `run.succeeded` or `run.failed`
//! is in the file, the sink's lane is empty, and for 3 s neither the file, nor the facts derived,
//! nor the checkpoint writes (`/metrics`) changed — by then each finished run's facts are done
//! and it is a tombstone, in the deriver and in the checkpoint.
//!
//! Usage: cargo bench --bench live_memory -- [RUNNING [NODES [FINISHED]]]
//! (defaults 10000, 50 and 0: `-- 10000 50` is 10,000 running workflows of 50 nodes).
//! Prints one JSON line; `rss_per_workflow_kib` is the current RSS over all tracked workflows
//! (base included, `null` without workflows: per-kind costs come from differences between runs).

#[path = "support/rss.rs"]
mod rss;
use fake_apiserver::{FakeApiServer, synthetic};
use rss::status_kib;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long nothing may change before the bridge counts as idle.
const QUIET: Duration = Duration::from_secs(3);

/// A synthetic workflow that ended at `at`: the run, its DAG and every task Succeeded, or, when
/// `failed`, the last task, the DAG and the run Failed.
fn finished_workflow(
    namespace: &str,
    name: &str,
    uid: &str,
    nodes: usize,
    failed: bool,
    at: &str,
) -> Value {
    let mut wf = synthetic::workflow(namespace, name, uid, nodes);
    let run_phase = if failed { "Failed" } else { "Succeeded" };
    let last_task = format!("{name}.task-{}", nodes.saturating_sub(1));
    if let Some(all) = wf["status"]["nodes"].as_object_mut() {
        for node in all.values_mut() {
            let failing = failed && (node["type"] == "DAG" || node["name"] == last_task.as_str());
            node["phase"] = json!(if failing { "Failed" } else { "Succeeded" });
            node["finishedAt"] = json!(at);
            if node["type"] == "Pod" {
                node["progress"] = json!("1/1");
                if failing {
                    node["message"] = json!("Error (exit code 1)");
                }
            }
        }
    }
    let status = &mut wf["status"];
    status["phase"] = json!(run_phase);
    status["finishedAt"] = json!(at);
    status["progress"] = json!(format!("{nodes}/{nodes}"));
    status["conditions"] = json!([{"type": "Completed", "status": "True"}]);
    if failed {
        status["message"] = json!(format!("child '{name}-{}' failed", 999_999 + nodes));
    }
    let labels = &mut wf["metadata"]["labels"];
    labels["workflows.argoproj.io/phase"] = json!(run_phase);
    labels["workflows.argoproj.io/completed"] = json!("true");
    wf
}

/// Event counts by type in the file sink's output, read as it grows.
#[derive(Default)]
struct Output {
    offset: u64,
    partial: Vec<u8>,
    lines: usize,
    started: usize,
    ended: usize,
    other: usize,
}

impl Output {
    /// Reads what was appended since the last call; true if there was anything.
    fn poll(&mut self, path: &Path) -> bool {
        let Ok(mut file) = std::fs::File::open(path) else {
            return false;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut new = Vec::new();
        let read = file.read_to_end(&mut new).unwrap_or(0);
        self.offset += read as u64;
        self.partial.extend_from_slice(&new);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return read > 0;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.lines += 1;
            let ty = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if ty.ends_with(".run.started") {
                self.started += 1;
            } else if ty.ends_with(".run.succeeded") || ty.ends_with(".run.failed") {
                self.ended += 1;
            } else {
                self.other += 1;
            }
        }
        read > 0
    }
}

/// The bridge's `/metrics` text, or `None` while it does not answer.
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The sum of a metric's samples over its label sets.
fn sample_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.chars().next()? {
                '{' => rest.rsplit_once('}')?.1,
                ' ' => rest,
                _ => return None,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// What `/metrics` says of progress: facts derived, checkpoint writes, events in the lanes.
#[derive(Clone, Copy, PartialEq, Default, Debug)]
struct Progress {
    facts: f64,
    checkpoint_writes: f64,
    lane_depth: f64,
}

impl Progress {
    fn of(metrics: &str) -> Self {
        Progress {
            facts: sample_sum(metrics, "kfp_event_bridge_facts_total"),
            checkpoint_writes: sample_sum(metrics, "kfp_event_bridge_checkpoint_writes_total"),
            lane_depth: sample_sum(metrics, "kfp_event_bridge_lane_depth"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).map_or(default, |a| {
            a.parse()
                .unwrap_or_else(|_| panic!("argument {}: {a:?} is not a count", i + 1))
        })
    };
    let running = arg(0, 10_000);
    let nodes = arg(1, 50);
    let finished = arg(2, 0);
    let workflows = running + finished;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("kfp-live-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let api = runtime.block_on(FakeApiServer::start_with(
        workflows + 10,
        Duration::from_secs(5),
    ));
    let ended_at = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let object_bytes =
        serde_json::to_vec(&synthetic::workflow("ns", "wf-0", "u", nodes)).map_or(0, |b| b.len());
    let finished_object_bytes = serde_json::to_vec(&finished_workflow(
        "ns", "wf-0", "u", nodes, false, &ended_at,
    ))
    .map_or(0, |b| b.len());
    for i in 0..running {
        let namespace = format!("team-{}", i % 20);
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        api.apply(synthetic::workflow(
            &namespace,
            &format!("wf-{i}"),
            &uid,
            nodes,
        ));
    }
    let mut failed = 0;
    for i in 0..finished {
        let namespace = format!("team-{}", i % 20);
        let uid = format!("00000000-0000-4000-9000-{i:012}");
        let fails = i % 20 == 19;
        failed += usize::from(fails);
        api.apply(finished_workflow(
            &namespace,
            &format!("done-{i}"),
            &uid,
            nodes,
            fails,
            &ended_at,
        ));
    }
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let out = dir.join("out.jsonl");
    // A free port for the admin server, so that the bench can read /metrics.
    let admin = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kfp-event-bridge");
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args(["run", "--log", "warn", "--admin-addr"])
        .arg(admin.to_string())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--checkpoint")
        .arg(format!("file:{}", dir.join("state").display()))
        .arg("--sink")
        .arg(format!("file:{}?types=run.*", out.display()))
        .env_clear()
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build with cargo build --release)",
                binary.display()
            )
        });
    let pid = child.id();
    let limit = Duration::from_secs(1200).max(Duration::from_millis(40 * workflows as u64));
    let mut output = Output::default();
    let mut progress: Option<Progress> = None;
    // When the output last grew, and when anything last changed.
    let (mut last_line, mut last_change) = (started, started);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if output.poll(&out) {
            last_line = Instant::now();
            last_change = last_line;
        }
        let now = scrape(admin).map(|m| Progress::of(&m));
        if now.is_some() && now != progress {
            last_change = Instant::now();
            progress = now;
        }
        let complete = output.started >= workflows && output.ended >= finished;
        let drained = now.is_none_or(|p| p.lane_depth == 0.0);
        if complete && drained && last_change.elapsed() > QUIET {
            break;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("bridge exited: {status}");
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?}: {} of {workflows} run.started, {} of {finished} run ends",
            output.started,
            output.ended
        );
    }
    let peak = status_kib(pid, "VmHWM:");
    let current = status_kib(pid, "VmRSS:");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let seconds = |at: Instant| (at - started).as_secs_f64();
    println!(
        "{}",
        json!({
            "running": running,
            "finished": finished,
            "finished_failed": failed,
            "nodes": nodes,
            "workflows": workflows,
            "nodes_per_workflow": nodes,
            "object_bytes": object_bytes,
            "finished_object_bytes": finished_object_bytes,
            "facts": progress.map(|p| p.facts as u64),
            "run_events": {"started": output.started, "ended": output.ended, "other": output.other},
            "caught_up_s": seconds(last_line),
            "idle_s": seconds(last_change),
            "peak_rss_mib": mib(peak),
            "current_rss_mib": mib(current),
            "rss_mib": mib(current),
            "rss_per_workflow_kib": (workflows > 0).then(|| current as f64 / workflows as f64),
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}
