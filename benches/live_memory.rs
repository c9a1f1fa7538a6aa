//! Memory of the live bridge tracking many running workflows: starts the fake apiserver in this
//! process with N synthetic running workflows of M task nodes each, runs the release binary
//! against it (file checkpoint, file sink taking only `run.*` events), waits until every
//! workflow's `run.started` is out and the bridge is idle, and reads its peak and current RSS
//! from `/proc`.
//!
//! Usage: cargo bench --bench live_memory -- [WORKFLOWS [NODES]]   (defaults 10000 and 50)
//! Prints one JSON line.

use fake_apiserver::{FakeApiServer, synthetic};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let workflows: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
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
    let object_bytes =
        serde_json::to_vec(&synthetic::workflow("ns", "wf-0", "u", nodes)).map_or(0, |b| b.len());
    for i in 0..workflows {
        let namespace = format!("team-{}", i % 20);
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        api.apply(synthetic::workflow(
            &namespace,
            &format!("wf-{i}"),
            &uid,
            nodes,
        ));
    }
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let out = dir.join("out.jsonl");
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kfp-event-bridge");
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args([
            "run",
            "--log",
            "warn",
            "--admin-addr",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
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
    let mut last = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let n = count_lines(&out);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n >= workflows && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "bridge exited");
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "only {n} of {workflows} after 20 min"
        );
    }
    let caught_up = last.1 - started;
    let peak = status_kib(pid, "VmHWM:");
    let current = status_kib(pid, "VmRSS:");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    println!(
        "{}",
        serde_json::json!({
            "workflows": workflows,
            "nodes_per_workflow": nodes,
            "object_bytes": object_bytes,
            "facts": workflows * (nodes + 1),
            "caught_up_s": caught_up.as_secs_f64(),
            "peak_rss_mib": peak as f64 / 1024.0,
            "rss_mib": current as f64 / 1024.0,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}
