//! Running the real binary from a test: scratch directories, the bundled recordings as one input,
//! what `replay` prints, and the `sink summary` log lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kfp-event-bridge");

/// The binary with `args` (and `stdin`, when given) in a clean environment, expected to succeed:
/// each line it prints, as JSON.
pub fn json_lines(args: &[&str], stdin: Option<&[u8]>) -> Vec<serde_json::Value> {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("finishes");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kfp-bridge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every bundled recording in one file: 11 runs, 87 events.
pub fn all_recordings(scratch: &Scratch) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recordings");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("recordings")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    let mut all = Vec::new();
    for name in names {
        all.extend(std::fs::read(name).expect("read"));
    }
    let path = scratch.path("all.jsonl");
    std::fs::write(&path, all).expect("write");
    path
}

/// What `replay` publishes for `input`: (id, partitionkey) in order.
pub fn expected(input: &Path) -> Vec<(String, String)> {
    let out = Command::new(BIN)
        .args(["replay", &input.display().to_string()])
        .env_clear()
        .output()
        .expect("replay");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["id"].as_str().expect("id").to_owned(),
                v["partitionkey"].as_str().expect("key").to_owned(),
            )
        })
        .collect()
}

/// Where each running child's standard error goes: a file, so a chatty child never blocks on a
/// full pipe while the test is busy elsewhere.
static LOGS: Mutex<BTreeMap<u32, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// Spawns `command` with standard error captured to a file that `stderr` reads back.
/// A failing test must not leave its bridges running: on the first panic every process spawned
/// here is killed (the others of the same test binary fail with it, which it already does).
static KILL_ON_PANIC: std::sync::Once = std::sync::Once::new();

pub fn spawn_logged(command: &mut Command) -> Child {
    KILL_ON_PANIC.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let pids: Vec<u32> = LOGS
                .lock()
                .map(|l| l.keys().copied().collect())
                .unwrap_or_default();
            for pid in pids {
                // Only if that pid is still one of ours, not a reused number.
                let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(BIN));
                if !ours {
                    continue;
                }
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            default(info);
        }));
    });
    let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("kfp-bridge-stderr-{}-{n}", std::process::id()));
    let file = std::fs::File::create(&path).expect("log file");
    let child = command.stderr(file).spawn().expect("bridge starts");
    LOGS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(child.id(), path);
    child
}

pub fn bridge(args: &[&str], envs: &[(&str, &str)]) -> Child {
    spawn_logged(
        Command::new(BIN)
            .args(args)
            .args(["--log-format", "json"])
            .env_clear()
            .envs(envs.iter().copied())
            .stdout(Stdio::null()),
    )
}

pub async fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("bridge still running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything the child wrote to standard error so far.
pub fn stderr(child: &mut Child) -> String {
    let path = LOGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&child.id())
        .cloned()
        .expect("spawned with spawn_logged");
    std::fs::read_to_string(path).expect("stderr")
}

/// The `sink summary` log lines, by sink name.
pub fn summaries(log: &str) -> BTreeMap<String, serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "sink summary")
        .map(|v| {
            (
                v["fields"]["sink"].as_str().expect("sink").to_owned(),
                v["fields"].clone(),
            )
        })
        .collect()
}

/// `replay`'s structured events for `input`, by id, in order.
pub fn replayed(input: &std::path::Path) -> Vec<serde_json::Value> {
    replayed_with(input, &[])
}

/// As [`replayed`], with more arguments for `replay` (`--format cdevents`).
pub fn replayed_with(input: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["replay", &input.display().to_string()])
        .args(args)
        .env_clear()
        .output()
        .expect("replay");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// What `{type}` renders as in a CDEvents sink's template: the CDEvent type without its prefix
/// and version, `dev.cdevents.taskrun.finished.0.3.0` → `taskrun.finished`,
/// `dev.cdeventsx.kfp-taskrun.skipped.0.1.0` → `kfp-taskrun.skipped`.
pub fn cdevents_short_type(ty: &str) -> String {
    let rest = ty
        .strip_prefix("dev.cdevents.")
        .or_else(|| ty.strip_prefix("dev.cdeventsx."))
        .unwrap_or_else(|| panic!("{ty} is not a CDEvents type"));
    let parts: Vec<&str> = rest.split('.').collect();
    assert_eq!(parts.len(), 5, "{ty}: subject, predicate, version");
    format!("{}.{}", parts[0], parts[1])
}

/// Each id once, the same JSON as `replay`, each run in order.
pub fn assert_same_as_replay(got: &[serde_json::Value], want: &[serde_json::Value]) {
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "an id is stored twice"
    );
    let by_id: BTreeMap<&str, &serde_json::Value> = want
        .iter()
        .map(|e| (e["id"].as_str().expect("id"), e))
        .collect();
    assert_eq!(got.len(), want.len(), "events missing");
    for e in got {
        assert_eq!(
            Some(&e),
            by_id.get(e["id"].as_str().expect("id")),
            "event differs"
        );
    }
    let runs = |events: &[serde_json::Value]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in events {
            m.entry(e["partitionkey"].to_string())
                .or_default()
                .push(e["id"].to_string());
        }
        m
    };
    assert_eq!(runs(got), runs(want), "a run's events are out of order");
}

/// A replay reading its recording from standard input, for outage tests: the test feeds the first
/// half of `input`'s lines now and the rest when it chooses (`Fed::rest`).
pub struct Fed {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    rest: Vec<String>,
}

impl Fed {
    pub fn start(input: &Path, sink: &str) -> Self {
        Self::start_with(input, sink, &[])
    }

    /// As [`Fed::start`], with more arguments for the bridge.
    pub fn start_with(input: &Path, sink: &str, extra: &[&str]) -> Self {
        let lines: Vec<String> = std::fs::read_to_string(input)
            .expect("input")
            .lines()
            .map(str::to_owned)
            .collect();
        let mut child = spawn_logged(
            Command::new(BIN)
                .args([
                    "replay",
                    "-",
                    "--sink",
                    sink,
                    "--retry-max",
                    "2s",
                    "--log-format",
                    "json",
                ])
                .args(extra)
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        );
        let mut stdin = child.stdin.take().expect("stdin");
        let half = lines.len() / 2;
        for line in &lines[..half] {
            writeln!(stdin, "{line}").expect("feed");
        }
        stdin.flush().expect("flush");
        Self {
            child,
            stdin: Some(stdin),
            rest: lines[half..].to_vec(),
        }
    }

    /// Feeds the second half and closes standard input.
    pub fn rest(&mut self) {
        self.rest_open();
        self.close();
    }

    /// Feeds the second half, leaving standard input open (the replay keeps running).
    pub fn rest_open(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            for line in std::mem::take(&mut self.rest) {
                writeln!(stdin, "{line}").expect("feed");
            }
            stdin.flush().expect("flush");
        }
    }

    /// The broker was just stopped: feeds the second half and holds the outage for 30 s, checking
    /// that the replay waits and that `/readyz` (at `addr`) turns 503 naming `sink` within 10 s
    /// and stays so.
    pub async fn outage(&mut self, addr: &str, sink: &str) {
        let stopped = Instant::now();
        self.rest_open();
        let needle = format!("FAIL sink {sink}");
        let (after, _) = readyz_becomes(addr, 503, &needle, Duration::from_secs(10)).await;
        eprintln!("not ready {after:?} after the broker stopped");
        tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
        assert!(
            self.child.try_wait().expect("poll").is_none(),
            "the bridge waits for the broker"
        );
        assert_eq!(
            get(addr, "/readyz").await.0,
            503,
            "not ready during the outage"
        );
    }

    /// Closes standard input: the replay ends once everything is delivered.
    pub fn close(&mut self) {
        self.stdin = None;
    }
}

/// Runs the bridge to the end (at most a minute) and returns its log, which must show success.
pub async fn run_ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut child = bridge(args, envs);
    let status = wait(&mut child, Duration::from_secs(60)).await;
    let log = stderr(&mut child);
    assert!(status.success(), "exit {status:?}: {log}");
    log
}

/// A file of JSON lines (a dead-letter file, a file sink), parsed.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("JSON lines file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The admin server's address, from the child's `admin server listening` log line.
pub async fn admin_addr(child: &mut Child) -> String {
    let t0 = Instant::now();
    loop {
        let log = stderr(child);
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin server listening"))
            });
        if let Some(v) = found {
            return v["fields"]["addr"].as_str().expect("addr").to_owned();
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("bridge exited ({status}) before its admin server listened: {log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no admin server: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET http://ADDR/PATH`: status and body.
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("admin server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Samples of an exposition: `name{label="value",…}` (labels sorted, `le` included) → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("sample value"),
        };
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut pairs = Vec::new();
                let mut rest = labels.strip_suffix('}').expect("closing brace");
                while let Some((label, after)) = rest.split_once("=\"") {
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next().map(|(_, c)| c)),
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    pairs.push(format!("{}=\"{value}\"", label.trim_start_matches(',')));
                    rest = &after[end..];
                }
                pairs.sort_unstable();
                format!("{name}{{{}}}", pairs.join(","))
            }
        };
        out.insert(key, value);
    }
    out
}

/// The metric families an exposition declares (`# TYPE` lines).
pub fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Polls `/readyz` until it answers `want` with `needle` in its body: how long that took, and
/// the body. Panics after `limit`.
pub async fn readyz_becomes(
    addr: &str,
    want: u16,
    needle: &str,
    limit: Duration,
) -> (Duration, String) {
    let t0 = Instant::now();
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == want && body.contains(needle) {
            return (t0.elapsed(), body);
        }
        assert!(
            t0.elapsed() < limit,
            "/readyz still {status} after {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
