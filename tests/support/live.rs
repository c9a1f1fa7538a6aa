//! The live input under test: a fake apiserver playing recordings, and the real binary watching
//! it with a file sink and a file checkpoint.

use super::bridge::{BIN, Scratch, spawn_logged};
use fake_apiserver::FakeApiServer;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Far enough back that the bundled recordings' runs are not history.
pub const RETENTION: &str = "3650d";

/// Leader-election timings short enough for a test.
pub const FAST_LEASE: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--lease-retry-period",
    "500ms",
];

pub struct Cluster {
    pub api: FakeApiServer,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub async fn start(scratch: &Scratch) -> Self {
        let api = FakeApiServer::start().await;
        let kubeconfig = scratch.path("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        Self { api, kubeconfig }
    }

    pub fn feed(&self, lines: &[String]) {
        for line in lines {
            self.api.feed_line(line);
        }
    }
}

/// The bundled recordings, `copies` times over, each copy in namespaces of its own and with its
/// own uids (11 runs and 248 watch lines a copy). Names stay as recorded, so the node ids —
/// hashes of node names, as Argo makes them — still match what the Events name.
pub fn many_runs(copies: usize) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recordings");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("recordings")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for copy in 0..copies {
        for file in &files {
            let text = std::fs::read_to_string(file).expect("recording");
            let mut namespaces = BTreeSet::new();
            let mut uids = BTreeSet::new();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                let o = &v["object"];
                namespaces.insert(o["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
                let meta = if o["kind"] == "Workflow" {
                    &o["metadata"]
                } else {
                    &o["involvedObject"]
                };
                uids.insert(meta["uid"].as_str().unwrap_or("").to_owned());
            }
            let mut text = text.clone();
            for ns in namespaces.iter().filter(|n| !n.is_empty()) {
                text = text.replace(
                    &format!("\"namespace\":\"{ns}\""),
                    &format!("\"namespace\":\"{ns}-c{copy}\""),
                );
            }
            for uid in uids.iter().filter(|u| u.len() > 8) {
                text = text.replace(
                    uid.as_str(),
                    &format!("{}{copy:08x}", &uid[..uid.len() - 8]),
                );
            }
            out.extend(text.lines().map(str::to_owned));
        }
    }
    out
}

/// Writes lines as a recording file.
pub fn write_recording(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write recording");
}

/// Starts `run` against the cluster with a file sink `out` and a file checkpoint in `state`;
/// flags in `extra` replace these defaults.
pub fn live_bridge(cluster: &Cluster, out: &Path, state: &Path, extra: &[&str]) -> Child {
    let defaults = [
        ("--checkpoint", format!("file:{}", state.display())),
        ("--checkpoint-interval", "200ms".to_owned()),
        ("--retention", RETENTION.to_owned()),
        // Tests run side by side: no fixed admin port.
        ("--admin-addr", "127.0.0.1:0".to_owned()),
    ];
    let mut command = Command::new(BIN);
    command.args([
        "run",
        "--kubeconfig",
        &cluster.kubeconfig.display().to_string(),
        "--sink",
        &format!("file:{}", out.display()),
        "--log-format",
        "json",
    ]);
    for (flag, value) in &defaults {
        if !extra.contains(flag) {
            command.args([flag, value.as_str()]);
        }
    }
    spawn_logged(command.args(extra).env_clear().stdout(Stdio::null()))
}

/// Lines in a file (0 if it does not exist yet).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

/// Waits until `path` holds at least `n` lines and then stays unchanged for `quiet`; returns
/// the count. Panics after `limit`.
pub async fn settle(path: &Path, n: usize, quiet: Duration, limit: Duration) -> usize {
    let t0 = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        let now = count_lines(path);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now >= n && last.1.elapsed() >= quiet {
            return now;
        }
        assert!(
            t0.elapsed() < limit,
            "{} has {now} lines after {limit:?}, want {n}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a log line with this message in the child's stderr.
pub async fn wait_for_log(child: &mut Child, message: &str, limit: Duration) {
    wait_for_logs(child, message, 1, limit).await;
}

/// Waits until both watches of a cluster-wide bridge (Workflows and Events) have listed. Until
/// then a workflow created and deleted at once is never seen (as with a real apiserver): only
/// its Events would speak for it.
pub async fn wait_synced(child: &mut Child, limit: Duration) {
    wait_for_logs(child, "watch synced", 2, limit).await;
}

/// Waits for `n` log lines with this message in the child's stderr.
pub async fn wait_for_logs(child: &mut Child, message: &str, n: usize, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if super::bridge::stderr(child).matches(message).count() >= n {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "bridge exited ({status}) before logging {message:?}: {}",
                super::bridge::stderr(child)
            );
        }
        assert!(t0.elapsed() < limit, "no {message:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// Every id in an output file, with how often it occurs.
pub fn id_counts(path: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        *counts
            .entry(v["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    counts
}

/// Ids with the content each had: every copy of an id must be identical.
pub fn assert_duplicates_identical(path: &Path) {
    let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let id = v["id"].as_str().expect("id").to_owned();
        if let Some(before) = seen.get(&id) {
            assert_eq!(before, &v, "id {id} published twice with different content");
        } else {
            seen.insert(id, v);
        }
    }
}

/// Only the last state of each object — what a bridge that was down in between sees — with
/// deletions left out (a deleted workflow is then still there). Nothing transient remains: a
/// level-based bridge cannot publish a warning whose pending pod came and went while it was not
/// running.
pub fn final_states(lines: &[String]) -> Vec<String> {
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if v["type"] == "DELETED" {
            continue;
        }
        let m = &v["object"]["metadata"];
        let key = format!("{}/{}/{}", v["object"]["kind"], m["namespace"], m["name"]);
        last.insert(key, i);
    }
    let keep: BTreeSet<usize> = last.into_values().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, l)| l.clone())
        .collect()
}

/// Every event in the output files, skipping a line torn by `kill -9` at a file's end (a fact
/// whose line is torn was never acknowledged, so it is sent again).
pub fn read_outputs(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => events.push(v),
                Err(err) if i + 1 == lines.len() && !text.ends_with('\n') => {
                    eprintln!("{}: torn last line skipped ({err})", path.display());
                }
                Err(err) => panic!("{}: line {}: {err}", path.display(), i + 1),
            }
        }
    }
    events
}
