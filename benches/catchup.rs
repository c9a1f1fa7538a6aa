//! Catch-up of the live bridge after it was away: the fake apiserver in this process holds N
//! finished workflows (every 20th Failed) and M running ones, of K task nodes each; a bridge
//! binary runs `run` against it with a file sink and a `file:` or `configmap:` checkpoint, and
//! this measures how long it takes until every expected fact is in the sink file and the bridge is
//! idle (no line and no checkpoint write for `--quiet-s`), what it cost the API server (ConfigMap
//! writes and the bytes written, every request), the checkpoint's final size, the bridge's peak
//! RSS, and the duplicates after a `kill -9` at half the expected lines and a restart.
//!
//! The expected facts are the ids `replay` gives for a recording of exactly the objects served
//! (their last states as `ADDED` lines), with the same binary: whatever a build derives from
//! those objects, its live catch-up must publish those ids, and the run is checked against them
//! (`missing`, `unexpected`).
//!
//! Usage: cargo bench --bench catchup -- [options]
//!   --finished N (10000)  --running M (1000)  --nodes K (50)  --rounds R (3)
//!   --bridges 'NAME=PATH …' (or env BRIDGES; default current=target/release/kfp-event-bridge)
//!   --checkpoints file,configmap   --sinks file,nats (file; nats: JetStream at NATS_URL, each
//!     run its own stream, read back by a consumer here)   --latency-ms MS (0)  --write-mb-per-s MB (0: no write cost)
//!   --kill-rounds R (1; 0: no kill -9 run)   --quiet-s S (3)   --timeout-s S (1800)
//!   --steady-rate R (0: off) --steady-seconds T (30): after catch-up, R status updates per second
//!     to the running workflows (each ends one task: one fact) for T seconds
//!   --check-writes-per-fact MAX: exit 1 if a configmap run wrote more ConfigMaps per fact
//!   --bound N (256): the re-sends after a `kill -9` the bridge promises at most, reported beside
//!     the count (the default `--max-in-flight`)
//! Runs are interleaved (round, then checkpoint, then bridge); every run's JSON line goes to
//! stderr, and one JSON line per (bridge, checkpoint, sink) with the medians, then a table, to
//! stdout.

#[path = "support/http_get.rs"]
mod http_get;
#[path = "support/rss.rs"]
mod rss;
use fake_apiserver::{Cost, FakeApiServer, Kind, synthetic};
use rss::status_kib;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "kfp-bench";
const CHECKPOINT_NAME: &str = "kfp-event-bridge-checkpoint";
const CONFIGMAP_LABEL: &str = "kfp-event-bridge/checkpoint";
const FINISHED_AT: &str = "2026-03-14T09:05:00Z";

struct Opts {
    finished: usize,
    running: usize,
    nodes: usize,
    rounds: usize,
    bridges: Vec<(String, PathBuf)>,
    checkpoints: Vec<String>,
    /// `file` (the bridge's file sink) and `nats` (JetStream at `NATS_URL`).
    sinks: Vec<String>,
    nats_url: Option<String>,
    cost: Cost,
    kill_rounds: usize,
    quiet: Duration,
    timeout: Duration,
    steady_rate: u64,
    steady_seconds: u64,
    check_writes_per_fact: Option<f64>,
    /// The re-sends after a `kill -9` the bridge promises at most (`--max-in-flight`).
    bound: u64,
    dir: PathBuf,
}

fn usage(message: &str) -> ! {
    eprintln!("catchup: {message} (see the header of benches/catchup.rs)");
    std::process::exit(2);
}

/// A comma-separated list of `flag`'s value, each one of `allowed`.
fn kinds(flag: &str, text: &str, allowed: &[&str]) -> Vec<String> {
    let list: Vec<String> = text.split(',').map(str::to_owned).collect();
    if let Some(bad) = list.iter().find(|k| !allowed.contains(&k.as_str())) {
        usage(&format!("{flag}: {bad:?} is not {}", allowed.join(" or ")));
    }
    list
}

fn parse_bridges(text: &str) -> Vec<(String, PathBuf)> {
    text.split_whitespace()
        .map(|item| match item.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                (name.to_owned(), PathBuf::from(path))
            }
            _ => usage(&format!("bridge {item:?}: want NAME=PATH")),
        })
        .collect()
}

impl Opts {
    fn parse() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut opts = Opts {
            finished: 10_000,
            running: 1_000,
            nodes: 50,
            rounds: 3,
            bridges: std::env::var("BRIDGES")
                .ok()
                .filter(|b| !b.trim().is_empty())
                .map(|b| parse_bridges(&b))
                .unwrap_or_else(|| {
                    vec![(
                        "current".to_owned(),
                        root.join("target/release/kfp-event-bridge"),
                    )]
                }),
            checkpoints: vec!["file".to_owned(), "configmap".to_owned()],
            sinks: vec!["file".to_owned()],
            nats_url: std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()),
            cost: Cost::default(),
            kill_rounds: 1,
            quiet: Duration::from_secs(3),
            timeout: Duration::from_secs(1800),
            steady_rate: 0,
            steady_seconds: 30,
            check_writes_per_fact: None,
            bound: 256,
            dir: std::env::temp_dir().join(format!("kfp-catchup-{}", std::process::id())),
        };
        let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{flag} wants a value")))
            };
            let number = |v: String| -> f64 {
                v.parse()
                    .unwrap_or_else(|_| usage(&format!("{flag}: {v:?} is not a number")))
            };
            match flag.as_str() {
                "--finished" => opts.finished = number(value()) as usize,
                "--running" => opts.running = number(value()) as usize,
                "--nodes" => opts.nodes = (number(value()) as usize).max(1),
                "--rounds" => opts.rounds = (number(value()) as usize).max(1),
                "--bridges" => opts.bridges = parse_bridges(&value()),
                "--checkpoints" => {
                    opts.checkpoints = kinds(&flag, &value(), &["file", "configmap"])
                }
                "--sinks" => opts.sinks = kinds(&flag, &value(), &["file", "nats"]),
                "--latency-ms" => {
                    opts.cost.per_request = Duration::from_secs_f64(number(value()) / 1e3);
                }
                "--write-mb-per-s" => {
                    let rate = number(value()) * 1e6;
                    opts.cost.write_bytes_per_sec = (rate > 0.0).then_some(rate as u64);
                }
                "--kill-rounds" => opts.kill_rounds = number(value()) as usize,
                "--quiet-s" => opts.quiet = Duration::from_secs_f64(number(value())),
                "--timeout-s" => opts.timeout = Duration::from_secs_f64(number(value())),
                "--steady-rate" => opts.steady_rate = number(value()) as u64,
                "--steady-seconds" => opts.steady_seconds = number(value()) as u64,
                "--check-writes-per-fact" => opts.check_writes_per_fact = Some(number(value())),
                "--bound" => opts.bound = number(value()) as u64,
                "--dir" => opts.dir = PathBuf::from(value()),
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        if opts.sinks.iter().any(|s| s == "nats") && opts.nats_url.is_none() {
            usage("--sinks nats needs NATS_URL (nats://HOST:PORT, JetStream enabled)");
        }
        for (name, path) in &opts.bridges {
            if !path.is_file() {
                usage(&format!(
                    "bridge {name}: {} not found (cargo build --release)",
                    path.display()
                ));
            }
        }
        opts
    }
}

/// The objects served, in the order they are created: N finished, then M running.
fn workflows(opts: &Opts) -> impl Iterator<Item = Value> + '_ {
    (0..opts.finished + opts.running).map(|i| {
        let namespace = format!("team-{}", i % 20);
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let mut wf = synthetic::workflow(&namespace, &format!("wf-{i}"), &uid, opts.nodes);
        // Set here, not by the server, so that the recording replayed says the same.
        wf["metadata"]["creationTimestamp"] = json!("2026-03-14T08:59:50Z");
        if i < opts.finished {
            let phase = if i % 20 == 19 { "Failed" } else { "Succeeded" };
            synthetic::finish(&mut wf, phase, FINISHED_AT);
        }
        wf
    })
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Every event id in a sink file (as hashes) with how often it occurs, and the lines that were
/// not an event (torn by a `kill -9`).
fn id_counts(path: &Path) -> (HashMap<u64, u32>, usize) {
    let text = std::fs::read(path).unwrap_or_default();
    let mut counts = HashMap::new();
    let mut torn = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<IdOnly>(line) {
            Ok(e) => *counts.entry(id_hash(&e.id)).or_insert(0) += 1,
            Err(_) => torn += 1,
        }
    }
    (counts, torn)
}

/// Counts the lines of a growing file, reading only what was added.
struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: usize,
}

impl LineCounter {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            offset: 0,
            lines: 0,
        }
    }

    fn poll(&mut self) -> usize {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.lines += buf[..n].iter().filter(|b| **b == b'\n').count();
        }
        self.lines
    }
}

/// The bridge's expected ids for the served objects: `replay` of their recording.
fn expected_ids(bridge: &Path, recording: &Path, dir: &Path) -> HashSet<u64> {
    let out = dir.join("expected.jsonl");
    let _ = std::fs::remove_file(&out);
    let status = Command::new(bridge)
        .args(["--log", "error", "replay"])
        .arg(recording)
        .arg("--sink")
        .arg(format!("file:{}", out.display()))
        .env_clear()
        .stdout(Stdio::null())
        .status()
        .expect("replay");
    assert!(status.success(), "{} replay: {status}", bridge.display());
    let (counts, torn) = id_counts(&out);
    assert_eq!(torn, 0, "replay wrote lines without an id");
    let _ = std::fs::remove_file(&out);
    counts.into_keys().collect()
}

/// The JSON log lines of a bridge's stderr.
fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn log_field(lines: &[Value], message: &str, field: &str) -> Option<Value> {
    lines
        .iter()
        .rev()
        .find(|l| l["fields"]["message"] == message)
        .map(|l| l["fields"][field].clone())
}

/// `kfp_event_bridge_checkpoint_writes_total` from the bridge's `/metrics`.
fn metric_checkpoint_writes(admin: Option<&str>) -> Option<u64> {
    let (_, text) = http_get::get(admin?, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("kfp_event_bridge_checkpoint_writes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

struct Bridge {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Bridge {
    fn start(binary: &Path, kubeconfig: &Path, checkpoint: &str, sink: &str, log: &Path) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let started = Instant::now();
        let child = Command::new(binary)
            .args(["run", "--log", "info", "--log-format", "json"])
            .args(["--admin-addr", "127.0.0.1:0", "--retention", "3650d"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--checkpoint", checkpoint])
            .args(["--sink", sink])
            .env_clear()
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        Self {
            child,
            log: log.to_owned(),
            started,
        }
    }

    fn admin(&self) -> Option<String> {
        log_field(
            &log_lines(&self.log),
            "admin server listening (/healthz, /readyz, /metrics)",
            "addr",
        )
        .and_then(|a| a.as_str().map(str::to_owned))
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn sigterm(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What changes when the checkpoint is written: ConfigMap writes counted by the server, or the
/// shard files' names, sizes and times.
fn checkpoint_signature(api: &FakeApiServer, state: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    configmap_writes(api).0.hash(&mut h);
    if let Ok(entries) = std::fs::read_dir(state) {
        let mut files: Vec<(String, u64, Option<std::time::SystemTime>)> = entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().ok(),
                ))
            })
            .collect();
        files.sort();
        files.hash(&mut h);
    }
    h.finish()
}

/// ConfigMap writes (create + update) and their body bytes.
fn configmap_writes(api: &FakeApiServer) -> (u64, u64) {
    api.costs()
        .iter()
        .filter(|((verb, resource), _)| {
            resource == "configmaps" && (verb == "create" || verb == "update")
        })
        .fold((0, 0), |(n, b), (_, c)| {
            (n + c.requests, b + c.request_bytes)
        })
}

fn checkpoint_bytes(api: &FakeApiServer, state: &Path, kind: &str) -> u64 {
    if kind == "file" {
        return std::fs::read_dir(state).map_or(0, |d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        });
    }
    api.objects(Kind::ConfigMap)
        .iter()
        .filter(|cm| cm["metadata"]["labels"][CONFIGMAP_LABEL] == CHECKPOINT_NAME)
        .flat_map(|cm| cm["data"].as_object().cloned().unwrap_or_default())
        .map(|(k, v)| (k.len() + v.as_str().map_or(0, str::len)) as u64)
        .sum()
}

struct Caught {
    at: Duration,
    lines: usize,
    complete: bool,
}

/// Waits until `out` has `want` lines (or `stop_at` lines, then returns at once) and neither it
/// nor the checkpoint changed for `quiet`; gives up (incomplete) after `quiet` × 20 without
/// change or the timeout.
fn wait_caught_up(
    bridge: &mut Bridge,
    api: &FakeApiServer,
    state: &Path,
    counter: &mut LineCounter,
    want: usize,
    stop_at: Option<usize>,
    opts: &Opts,
) -> Caught {
    let mut last_lines = (usize::MAX, Instant::now());
    let mut last_sig = (0u64, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let lines = counter.poll();
        if lines != last_lines.0 {
            last_lines = (lines, Instant::now());
        }
        let sig = checkpoint_signature(api, state);
        if sig != last_sig.0 {
            last_sig = (sig, Instant::now());
        }
        let done_at = last_lines.1.max(last_sig.1);
        if stop_at.is_some_and(|s| lines >= s) {
            return Caught {
                at: bridge.started.elapsed(),
                lines,
                complete: false,
            };
        }
        let idle = done_at.elapsed();
        if (lines >= want && idle >= opts.quiet) || idle >= opts.quiet * 20 {
            return Caught {
                at: done_at - bridge.started,
                lines,
                complete: lines >= want,
            };
        }
        assert!(
            bridge.alive(),
            "bridge exited: see {}",
            bridge.log.display()
        );
        assert!(
            bridge.started.elapsed() < opts.timeout,
            "{lines} of {want} lines after {:?}",
            opts.timeout
        );
    }
}

fn start_api(opts: &Opts, workflows_json: &mut Option<PathBuf>) -> FakeApiServer {
    let runtime = runtime();
    let history =
        opts.finished + opts.running + (opts.steady_rate * opts.steady_seconds) as usize + 10_000;
    let api = runtime.block_on(FakeApiServer::start_with(history, Duration::from_secs(5)));
    for wf in workflows(opts) {
        api.apply(wf);
    }
    if let Some(path) = workflows_json.take() {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("recording"));
        for wf in api.objects(Kind::Workflow) {
            serde_json::to_writer(&mut file, &json!({"type": "ADDED", "object": wf}))
                .expect("write recording");
            file.write_all(b"\n").expect("write recording");
        }
        file.flush().expect("write recording");
    }
    api.set_cost(opts.cost);
    api.reset_costs();
    api
}

/// The one runtime of the fake apiserver (one worker thread), kept for the whole benchmark.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Where a run publishes: the bridge's `--sink` and, for NATS, a JetStream consumer of its own
/// stream writing each stored message's CloudEvent id as a line to `out`, so that the sink file
/// and the stream are counted alike. Dropped: the consumer stops, the stream is deleted.
struct Sink {
    uri: String,
    mirror: Option<(
        tokio::task::JoinHandle<()>,
        async_nats::jetstream::Context,
        String,
    )>,
}

impl Sink {
    fn open(opts: &Opts, kind: &str, out: &Path) -> Self {
        if kind == "file" {
            return Sink {
                uri: format!("file:{}", out.display()),
                mirror: None,
            };
        }
        use async_nats::jetstream::{self, consumer, stream};
        use futures_util::StreamExt;
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let url = opts.nats_url.clone().expect("NATS_URL");
        let name = format!("CATCHUP_{}_{n}", std::process::id());
        let subjects = format!("catchup.{}.{n}", std::process::id());
        let out = out.to_owned();
        let (task, js) = runtime().block_on(async {
            let js = jetstream::new(async_nats::connect(&url).await.expect("connect to NATS"));
            let stream = js
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{subjects}.>")],
                    // Re-sends after a kill -9 are counted, not dropped by the stream's
                    // de-duplication on Nats-Msg-Id (what a consumer sees is reported apart).
                    duplicate_window: Duration::from_millis(100),
                    ..Default::default()
                })
                .await
                .expect("create stream");
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    ack_policy: consumer::AckPolicy::None,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .expect("create consumer");
            let mut messages = consumer.messages().await.expect("pull");
            let task = tokio::spawn(async move {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&out)
                    .expect("mirror file");
                while let Some(message) = messages.next().await {
                    let Ok(message) = message else { continue };
                    let id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("ce-id"))
                        .map(|v| v.as_str().to_owned())
                        .or_else(|| {
                            serde_json::from_slice::<IdOnly>(&message.payload)
                                .ok()
                                .map(|e| e.id)
                        })
                        .unwrap_or_default();
                    let _ = file.write_all(format!("{}\n", json!({ "id": id })).as_bytes());
                }
            });
            (task, js)
        });
        Sink {
            uri: format!("{url}/{subjects}.{{type}}"),
            mirror: Some((task, js, name)),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((task, js, name)) = self.mirror.take() {
            task.abort();
            runtime().block_on(async {
                let _ = js.delete_stream(&name).await;
            });
        }
    }
}

fn checkpoint_spec(kind: &str, state: &Path) -> String {
    match kind {
        "file" => format!("file:{}", state.display()),
        _ => format!("configmap:{NAMESPACE}/{CHECKPOINT_NAME}"),
    }
}

/// `dir` made afresh and an API server holding the workflows: the server, its kubeconfig, and
/// the paths of the sink file, the checkpoint and the bridge's log.
fn prepare(opts: &Opts, dir: &Path) -> (FakeApiServer, PathBuf, PathBuf, PathBuf, PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch");
    let api = start_api(opts, &mut None);
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    (
        api,
        kubeconfig,
        dir.join("out.jsonl"),
        dir.join("state"),
        dir.join("bridge.log"),
    )
}

/// One clean catch-up (and the steady state after it, if asked).
fn clean_run(
    opts: &Opts,
    (name, binary): (&str, &Path),
    kind: &str,
    sink_kind: &str,
    expected: &HashSet<u64>,
) -> Value {
    let dir = opts.dir.join(format!("{name}-{kind}-{sink_kind}"));
    let (api, kubeconfig, out, state, log) = prepare(opts, &dir);
    let sink = Sink::open(opts, sink_kind, &out);
    let mut bridge = Bridge::start(
        binary,
        &kubeconfig,
        &checkpoint_spec(kind, &state),
        &sink.uri,
        &log,
    );
    let pid = bridge.child.id();
    let mut counter = LineCounter::new(&out);
    let caught = wait_caught_up(
        &mut bridge,
        &api,
        &state,
        &mut counter,
        expected.len(),
        None,
        opts,
    );
    let peak_kib = status_kib(pid, "VmHWM:");
    let costs = api.costs();
    let (cm_writes, cm_bytes) = configmap_writes(&api);
    let requests: u64 = costs.values().map(|c| c.requests).sum();
    let response_bytes: u64 = costs.values().map(|c| c.response_bytes).sum();
    let admin = bridge.admin();
    let metric_writes = metric_checkpoint_writes(admin.as_deref());
    let size = checkpoint_bytes(&api, &state, kind);
    let facts = expected.len();
    // The catch-up's ids, before the steady state adds its own.
    let (counts, torn) = id_counts(&out);
    let missing = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .count();
    let unexpected = counts.keys().filter(|id| !expected.contains(id)).count();
    let duplicates = counts.values().filter(|n| **n > 1).count();
    drop(counts);
    let mut steady = Value::Null;
    if opts.steady_rate > 0 && opts.running > 0 {
        steady = steady_state(
            opts,
            &api,
            &mut bridge,
            &state,
            &mut counter,
            admin.as_deref(),
        );
    }
    let rss_kib = status_kib(pid, "VmRSS:");
    bridge.sigterm();
    drop(sink);
    let logs = log_lines(&log);
    let row = json!({
        "bridge": name, "checkpoint": kind, "sink": sink_kind,
        "finished": opts.finished, "running": opts.running, "nodes": opts.nodes,
        "latency_ms": opts.cost.per_request.as_secs_f64() * 1e3,
        "write_mb_per_s": opts.cost.write_bytes_per_sec.map(|r| r as f64 / 1e6),
        "facts": facts, "lines": caught.lines, "complete": caught.complete,
        "missing": missing, "unexpected": unexpected, "duplicates": duplicates, "torn": torn,
        "caught_up_s": caught.at.as_secs_f64(),
        "facts_per_s": facts as f64 / caught.at.as_secs_f64().max(1e-9),
        "configmap_writes": cm_writes,
        "configmap_mb_written": cm_bytes as f64 / 1e6,
        "writes_per_fact": cm_writes as f64 / facts.max(1) as f64,
        "bridge_checkpoint_writes": metric_writes,
        "checkpoint_writes_at_exit": log_field(&logs, "checkpoint written", "writes"),
        "api_requests": requests,
        "api_mb_received": costs.values().map(|c| c.request_bytes).sum::<u64>() as f64 / 1e6,
        "api_mb_sent": response_bytes as f64 / 1e6,
        "api_requests_by": costs.iter().map(|((v, r), c)| (format!("{v} {r}"), c.requests)).collect::<BTreeMap<_, _>>(),
        "checkpoint_bytes": size,
        "peak_rss_mib": peak_kib as f64 / 1024.0,
        "rss_mib_at_end": rss_kib as f64 / 1024.0,
        "delivered": log_field(&logs, "sink summary", "delivered"),
        "steady": steady,
    });
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
    row
}

/// R updates a second to the running workflows for T seconds, each ending one task; then waits
/// until idle. ConfigMap writes per second are the writes from the first update until idle,
/// over T.
fn steady_state(
    opts: &Opts,
    api: &FakeApiServer,
    bridge: &mut Bridge,
    state: &Path,
    counter: &mut LineCounter,
    admin: Option<&str>,
) -> Value {
    let mut running: Vec<Value> = api
        .objects(Kind::Workflow)
        .into_iter()
        .filter(|wf| wf["status"]["phase"] == "Running")
        .collect();
    running.sort_by_key(|wf| wf["metadata"]["name"].as_str().map(str::to_owned));
    let updates = (opts.steady_rate * opts.steady_seconds) as usize;
    let updates = updates.min(running.len() * opts.nodes);
    let (writes0, bytes0) = configmap_writes(api);
    let metric0 = metric_checkpoint_writes(admin);
    let lines0 = counter.poll();
    let t0 = Instant::now();
    for k in 0..updates {
        let due = t0 + Duration::from_secs_f64(k as f64 / opts.steady_rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let count = running.len();
        let wf = &mut running[k % count];
        synthetic::finish_task(wf, k / count, "Succeeded", "2026-03-14T09:03:00Z");
        api.apply(wf.clone());
    }
    let applied = t0.elapsed();
    let caught = wait_caught_up(bridge, api, state, counter, lines0 + updates, None, opts);
    let (writes1, bytes1) = configmap_writes(api);
    let metric1 = metric_checkpoint_writes(admin);
    let seconds = opts.steady_seconds as f64;
    let writes = writes1 - writes0;
    let bridge_writes = metric0.zip(metric1).map(|(a, b)| b.saturating_sub(a));
    json!({
        "rate": opts.steady_rate, "seconds": opts.steady_seconds, "updates": updates,
        "applied_s": applied.as_secs_f64(),
        "new_lines": caught.lines - lines0,
        "configmap_writes": writes, "configmap_writes_per_s": writes as f64 / seconds,
        "configmap_mb_written": (bytes1 - bytes0) as f64 / 1e6,
        "configmap_kb_per_s": (bytes1 - bytes0) as f64 / 1e3 / seconds,
        "bridge_checkpoint_writes": bridge_writes,
        "bridge_checkpoint_writes_per_s": bridge_writes.map(|w| w as f64 / seconds),
    })
}

/// A catch-up with a `kill -9` at half the expected lines, a restart, and the duplicates.
fn kill_run(
    opts: &Opts,
    (name, binary): (&str, &Path),
    kind: &str,
    sink_kind: &str,
    expected: &HashSet<u64>,
) -> Value {
    let dir = opts.dir.join(format!("{name}-{kind}-{sink_kind}-kill"));
    let (api, kubeconfig, out, state, log) = prepare(opts, &dir);
    let spec = checkpoint_spec(kind, &state);
    let sink = Sink::open(opts, sink_kind, &out);
    let mut counter = LineCounter::new(&out);
    let mut bridge = Bridge::start(binary, &kubeconfig, &spec, &sink.uri, &log);
    let half = expected.len() / 2;
    let at_kill = wait_caught_up(
        &mut bridge,
        &api,
        &state,
        &mut counter,
        expected.len(),
        Some(half),
        opts,
    );
    bridge.kill9();
    let mut bridge = Bridge::start(binary, &kubeconfig, &spec, &sink.uri, &log);
    let caught = wait_caught_up(
        &mut bridge,
        &api,
        &state,
        &mut counter,
        expected.len(),
        None,
        opts,
    );
    bridge.sigterm();
    drop(sink);
    let (counts, torn) = id_counts(&out);
    let missing = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .count();
    let resent: u32 = counts.values().map(|n| n - 1).sum();
    let row = json!({
        "bridge": name, "checkpoint": kind, "sink": sink_kind, "kill9_at_line": at_kill.lines,
        "lines": caught.lines, "complete": caught.complete,
        "ids_twice": counts.values().filter(|n| **n > 1).count(), "resent": resent,
        "missing": missing, "torn": torn, "bound": opts.bound,
        "restart_caught_up_s": caught.at.as_secs_f64(),
    });
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let opts = Opts::parse();
    let _ = std::fs::remove_dir_all(&opts.dir);
    std::fs::create_dir_all(&opts.dir).expect("scratch");
    let recording = opts.dir.join("workflows.jsonl");
    eprintln!(
        "catchup: {} finished + {} running workflows of {} nodes; cost {:?} per request, writes at {}",
        opts.finished,
        opts.running,
        opts.nodes,
        opts.cost.per_request,
        opts.cost
            .write_bytes_per_sec
            .map_or("no cost".to_owned(), |r| format!(
                "{:.1} MB/s",
                r as f64 / 1e6
            )),
    );
    drop(start_api(&opts, &mut Some(recording.clone())));
    let expected: Vec<HashSet<u64>> = opts
        .bridges
        .iter()
        .map(|(_, path)| expected_ids(path, &recording, &opts.dir))
        .collect();
    let _ = std::fs::remove_file(&recording);
    for ((name, _), ids) in opts.bridges.iter().zip(&expected) {
        eprintln!("catchup: {name}: replay gives {} facts", ids.len());
    }
    let mut rows: Vec<Value> = Vec::new();
    let mut kills: Vec<Value> = Vec::new();
    for round in 0..opts.rounds {
        for kind in &opts.checkpoints {
            for sink in &opts.sinks {
                for ((name, path), ids) in opts.bridges.iter().zip(&expected) {
                    let mut row = clean_run(&opts, (name, path), kind, sink, ids);
                    row["round"] = json!(round + 1);
                    eprintln!("{row}");
                    rows.push(row);
                    if round < opts.kill_rounds {
                        let mut row = kill_run(&opts, (name, path), kind, sink, ids);
                        row["round"] = json!(round + 1);
                        eprintln!("{row}");
                        kills.push(row);
                    }
                }
            }
        }
    }
    let mut failed = false;
    println!(
        "{:<10} {:<10} {:<5} {:>9} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>11} {:>12}",
        "bridge",
        "checkpoint",
        "sink",
        "facts",
        "caught up",
        "CM writes",
        "CM MB",
        "writes/fact",
        "requests",
        "ckpt KB",
        "peak MiB",
        "dup (bound)",
        "steady w/s"
    );
    let mut table = Vec::new();
    for (kind, sink) in opts
        .checkpoints
        .iter()
        .flat_map(|k| opts.sinks.iter().map(move |s| (k, s)))
    {
        let same = |r: &&Value, name: &str| {
            r["bridge"] == name && r["checkpoint"] == kind.as_str() && r["sink"] == sink.as_str()
        };
        for (name, _) in &opts.bridges {
            let mine: Vec<&Value> = rows.iter().filter(|r| same(r, name)).collect();
            let med = |f: &dyn Fn(&Value) -> Option<f64>| {
                median(mine.iter().filter_map(|r| f(r)).collect())
            };
            let field = |k: &'static str| med(&|r: &Value| r[k].as_f64());
            let kill: Vec<&Value> = kills.iter().filter(|r| same(r, name)).collect();
            let summary = json!({
                "bridge": name, "checkpoint": kind, "sink": sink, "rounds": mine.len(),
                "finished": opts.finished, "running": opts.running, "nodes": opts.nodes,
                "latency_ms": opts.cost.per_request.as_secs_f64() * 1e3,
                "write_mb_per_s": opts.cost.write_bytes_per_sec.map(|r| r as f64 / 1e6),
                "facts": field("facts"),
                "complete": mine.iter().all(|r| r["complete"] == true && r["missing"] == 0),
                "caught_up_s": field("caught_up_s"),
                "configmap_writes": field("configmap_writes"),
                "configmap_mb_written": field("configmap_mb_written"),
                "writes_per_fact": field("writes_per_fact"),
                "bridge_checkpoint_writes": field("bridge_checkpoint_writes"),
                "api_requests": field("api_requests"),
                "checkpoint_bytes": field("checkpoint_bytes"),
                "peak_rss_mib": field("peak_rss_mib"),
                "kill9_resent": kill.iter().map(|r| r["resent"].clone()).collect::<Vec<_>>(),
                "kill9_ids_twice": kill.iter().map(|r| r["ids_twice"].clone()).collect::<Vec<_>>(),
                "kill9_missing": kill.iter().map(|r| r["missing"].clone()).collect::<Vec<_>>(),
                "kill9_bound": opts.bound,
                "steady_configmap_writes_per_s": med(&|r: &Value| r["steady"]["configmap_writes_per_s"].as_f64()),
                "steady_bridge_checkpoint_writes_per_s": med(&|r: &Value| r["steady"]["bridge_checkpoint_writes_per_s"].as_f64()),
            });
            println!("{summary}");
            if kind == "configmap"
                && let Some(max) = opts.check_writes_per_fact
                && summary["writes_per_fact"].as_f64().is_none_or(|w| w > max)
            {
                eprintln!(
                    "catchup: {name}: {} ConfigMap writes per fact, above {max}",
                    summary["writes_per_fact"]
                );
                failed = true;
            }
            if summary["complete"] != true {
                eprintln!("catchup: {name} {kind}: not every expected fact was published");
                failed = true;
            }
            table.push(summary);
        }
    }
    for s in &table {
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        let dup = s["kill9_ids_twice"]
            .as_array()
            .map(|a| a.iter().map(Value::to_string).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let steady = if s["checkpoint"] == "configmap" {
            f("steady_configmap_writes_per_s")
        } else {
            f("steady_bridge_checkpoint_writes_per_s")
        };
        println!(
            "{:<10} {:<10} {:<5} {:>9.0} {:>9.1}s {:>10.0} {:>9.1} {:>10.4} {:>10.0} {:>9.1} {:>9.1} {:>11} {:>12.2}",
            s["bridge"].as_str().unwrap_or(""),
            s["checkpoint"].as_str().unwrap_or(""),
            s["sink"].as_str().unwrap_or(""),
            f("facts"),
            f("caught_up_s"),
            f("configmap_writes"),
            f("configmap_mb_written"),
            f("writes_per_fact"),
            f("api_requests"),
            f("checkpoint_bytes") / 1e3,
            f("peak_rss_mib"),
            format!("{dup} ({})", s["kill9_bound"]),
            steady,
        );
    }
    let _ = std::fs::remove_dir_all(&opts.dir);
    if failed {
        std::process::exit(1);
    }
}
