//! End-to-end latency of the live bridge, side by side with a floor.
//!
//! This process hosts the fake apiserver and a consumer on the sink. A driver thread makes
//! status updates at a fixed rate: each one either creates a new Running workflow (fresh name
//! and uid; the bridge derives `run.queued`, `run.started` and one `task.started`) or finishes
//! one created `LAG` creations earlier (`task.succeeded`, `run.succeeded`). Creations and
//! finishes alternate once the first `LAG` workflows exist. The instant of each `apply` is kept.
//!
//! The process under test watches the fake apiserver and publishes; the consumer timestamps
//! what arrives. An update has arrived when its marker does: for the bridge `run.started`
//! (creation) or `run.succeeded` (finish) of that workflow; for the floor the raw object of that
//! workflow in phase `Running` or `Succeeded`. The first event of an update (`run.queued`,
//! `task.succeeded`) is recorded too (`first_*`). Latency = arrival − apply.
//!
//! - **bridge**: a `kfp-event-bridge run` binary (several, side by side: `BRIDGES`), with a file
//!   or a ConfigMap checkpoint, to stdout (its stdout read here), NATS JetStream or Kafka.
//! - **floor**: this binary's own `floor` mode, a separate process like the bridge: a minimal
//!   `kube::runtime::watcher` on `argoproj.io/v1alpha1` workflows (dynamic API) handing each
//!   object's JSON bytes to the raw client of the same broker (async-nats JetStream publish,
//!   PubAck awaited off the watch loop; an rdkafka `FutureProducer` with the Kafka sink's
//!   defaults, keyed by uid; or a line on stdout).
//!
//! Consumers: NATS through a JetStream pull consumer (ack none) on the run's subjects — what a
//! JetStream consumer sees, i.e. only messages the stream stored, not a core subscription that
//! sees a message before (or without) it being stored; Kafka through an rdkafka consumer
//! assigned every partition of the run's fresh topic from the beginning.
//!
//! Every run has its own fake apiserver, checkpoint, NATS stream and Kafka topic. Updates in the
//! first `WARMUP` seconds are driven but not measured. The apiserver's cost model can be set:
//! `APISERVER_LATENCY_MS` per request and `APISERVER_WRITE_MBPS` for writes (defaults 0: no
//! cost, the fake's own default; only the processes' requests pay it — list/watch starts, the
//! ConfigMap checkpoint's writes — the driver's applies are in-process).
//!
//! Usage: `cargo bench --bench latency -- [SECONDS [RATES]]` (defaults 10 and `10,100,1000`
//! updates/s), environment: `BRIDGES="before=PATH after=PATH"` (default
//! `after=target/release/kfp-event-bridge`), `SINKS` (`stdout,nats,kafka`; NATS needs
//! `NATS_URL`, Kafka `KAFKA_BOOTSTRAP`, else they are skipped), `CHECKPOINTS`
//! (`file,configmap`), `WARMUP` (2 s), `ROUNDS` (1), `TASKS` (1 task per workflow), `LOG_DIR`
//! (keep each process's stderr there), `BRIDGE_ARGS` (more flags for every bridge, e.g.
//! `--max-in-flight 4096`), `APISERVER_LATENCY_MS`, `APISERVER_WRITE_MBPS`.
//! Prints one JSON line per run, then a table of medians over the rounds: bridge and floor
//! p50/p99 and their differences.
//!
//! `latency floor KUBECONFIG stdout|nats://HOST:PORT/SUBJECT|kafka://BOOTSTRAP/TOPIC` is the
//! floor process.

#[path = "support/kafka_header.rs"]
mod kafka_header;

use async_nats::jetstream::{self, consumer, stream};
use fake_apiserver::{Cost, FakeApiServer, Kind, synthetic};
use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const NAMESPACE: &str = "kubeflow-user";
/// A finish ends the workflow created this many creations earlier.
const LAG: usize = 5;
/// How long after the last update arrivals are waited for.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SinkKind {
    Stdout,
    Nats,
    Kafka,
}

impl SinkKind {
    fn name(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::Nats => "nats-jetstream",
            SinkKind::Kafka => "kafka",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CheckpointKind {
    File,
    ConfigMap,
}

/// What runs: a bridge binary with a checkpoint, or the floor.
#[derive(Clone, Debug)]
enum Subject {
    Bridge {
        label: String,
        path: PathBuf,
        checkpoint: CheckpointKind,
    },
    Floor,
}

struct Settings {
    seconds: f64,
    warmup: f64,
    rates: Vec<u32>,
    sinks: Vec<SinkKind>,
    checkpoints: Vec<CheckpointKind>,
    bridges: Vec<(String, PathBuf)>,
    nats_url: Option<String>,
    kafka_bootstrap: Option<String>,
    rounds: usize,
    tasks: usize,
    cost: Cost,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn settings(args: &[String]) -> Settings {
    let seconds = args.first().map_or(10.0, |a| a.parse().expect("SECONDS"));
    let rates = args
        .get(1)
        .map_or("10,100,1000", String::as_str)
        .split(',')
        .map(|r| r.trim().parse().expect("RATES: comma-separated updates/s"))
        .collect();
    let nats_url = std::env::var("NATS_URL").ok().filter(|v| !v.is_empty());
    let kafka_bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|v| !v.is_empty());
    let mut sinks = Vec::new();
    for s in env_or("SINKS", "stdout,nats,kafka").split(',') {
        match s.trim() {
            "stdout" => sinks.push(SinkKind::Stdout),
            "nats" if nats_url.is_some() => sinks.push(SinkKind::Nats),
            "kafka" if kafka_bootstrap.is_some() => sinks.push(SinkKind::Kafka),
            "nats" | "kafka" => eprintln!("latency: {s} skipped (no NATS_URL / KAFKA_BOOTSTRAP)"),
            other => panic!("SINKS: unknown sink {other:?}"),
        }
    }
    let checkpoints = env_or("CHECKPOINTS", "file,configmap")
        .split(',')
        .map(|c| match c.trim() {
            "file" => CheckpointKind::File,
            "configmap" => CheckpointKind::ConfigMap,
            other => panic!("CHECKPOINTS: unknown checkpoint {other:?}"),
        })
        .collect();
    let default_bridge = format!(
        "after={}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/release/kfp-event-bridge")
            .display()
    );
    let bridges = env_or("BRIDGES", &default_bridge)
        .split_whitespace()
        .map(|b| {
            let (label, path) = b.split_once('=').unwrap_or(("bridge", b));
            let path = PathBuf::from(path);
            assert!(path.is_file(), "BRIDGES: {} is not a file", path.display());
            (label.to_owned(), path)
        })
        .collect();
    let number = |name: &str, default: &str| -> f64 {
        env_or(name, default)
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number"))
    };
    let write_mbps = number("APISERVER_WRITE_MBPS", "0");
    Settings {
        seconds,
        warmup: number("WARMUP", "2"),
        rates,
        sinks,
        checkpoints,
        bridges,
        nats_url,
        kafka_bootstrap,
        rounds: number("ROUNDS", "1") as usize,
        tasks: number("TASKS", "1") as usize,
        cost: Cost {
            per_request: Duration::from_secs_f64(number("APISERVER_LATENCY_MS", "0") / 1e3),
            write_bytes_per_sec: (write_mbps > 0.0).then_some((write_mbps * 1e6) as u64),
        },
    }
}

/// What a consumer received, timestamped on receipt.
enum Payload {
    /// A structured CloudEvent or a raw object.
    Json(Vec<u8>),
    /// A Kafka record in binary mode: its `ce_type` and `ce_workflow` headers.
    Binary { ty: String, workflow: String },
}

type Arrivals = mpsc::UnboundedSender<(Instant, Payload)>;

/// An update: the workflow's name and 0 (created) or 1 (finished).
type Key = (String, u8);

/// Which update a bridge event belongs to, and whether it is that update's marker.
fn classify_event(ty: &str, workflow: &str) -> Option<(Key, bool)> {
    let short = ty.rsplitn(3, '.').collect::<Vec<_>>();
    let (stage, marker) = match short.as_slice() {
        ["started", "run", ..] => (0, true),
        ["queued", "run", ..] | ["started", "task", ..] => (0, false),
        ["succeeded", "run", ..] => (1, true),
        ["succeeded", "task", ..] => (1, false),
        _ => return None,
    };
    Some(((workflow.to_owned(), stage), marker))
}

fn classify(payload: &Payload) -> Option<(Key, bool)> {
    match payload {
        Payload::Binary { ty, workflow } => classify_event(ty, workflow),
        Payload::Json(bytes) => {
            let v: Value = serde_json::from_slice(bytes).ok()?;
            if v["specversion"].is_string() {
                return classify_event(v["type"].as_str()?, v["workflow"].as_str()?);
            }
            // The floor's raw Workflow.
            let name = v["metadata"]["name"].as_str()?.to_owned();
            let stage = match v["status"]["phase"].as_str()? {
                "Running" => 0,
                "Succeeded" => 1,
                _ => return None,
            };
            Some(((name, stage), true))
        }
    }
}

/// First arrival and marker arrival of each update.
#[derive(Default)]
struct Seen {
    messages: usize,
    first: HashMap<Key, Instant>,
    marker: HashMap<Key, Instant>,
}

/// Reads lines from a child's stdout, each timestamped as it is read.
fn read_lines(out: impl std::io::Read + Send + 'static, tx: Arrivals) {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, out);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let at = Instant::now();
                    if tx.send((at, Payload::Json(line))).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

async fn nats_consumer(url: &str, run: usize, tx: Arrivals) -> tokio::task::JoinHandle<()> {
    let js = jetstream::new(async_nats::connect(url).await.expect("connect to NATS"));
    let _ = js.delete_stream("LATENCY").await;
    let stream = js
        .create_stream(stream::Config {
            name: "LATENCY".to_owned(),
            subjects: vec!["lat.>".to_owned()],
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("lat.r{run}.>"),
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut messages = consumer.messages().await.expect("pull");
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let at = Instant::now();
            let Ok(message) = message else { continue };
            if tx
                .send((at, Payload::Json(message.payload.to_vec())))
                .is_err()
            {
                return;
            }
        }
    })
}

async fn kafka_consumer(bootstrap: &str, topic: &str, tx: Arrivals) -> tokio::task::JoinHandle<()> {
    const PARTITIONS: i32 = 3;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for result in admin
        .create_topics(&[new], &options)
        .await
        .expect("create topic")
    {
        result.expect("topic created");
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kfp-latency-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", env_or("KAFKA_FETCH_WAIT_MS", "10"))
        .set("fetch.min.bytes", "1")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    tokio::spawn(async move {
        let mut stream = consumer.stream();
        while let Some(message) = stream.next().await {
            let at = Instant::now();
            let Ok(message) = message else { continue };
            let header = |name: &str| kafka_header::text(&message, name);
            let payload = match (header("ce_type"), header("ce_workflow")) {
                (Some(ty), Some(workflow)) => Payload::Binary { ty, workflow },
                _ => Payload::Json(message.payload().unwrap_or_default().to_vec()),
            };
            if tx.send((at, payload)).is_err() {
                return;
            }
        }
    })
}

/// The child's stderr, read by a thread: how often `needle` was logged, and the last lines.
struct Log {
    needle_count: Arc<AtomicUsize>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

fn watch_stderr(child: &mut Child, needle: &'static str, keep: Option<PathBuf>) -> Log {
    let err = child.stderr.take().expect("stderr piped");
    let mut file = keep.and_then(|p| std::fs::File::create(p).ok());
    let needle_count = Arc::new(AtomicUsize::new(0));
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (count, lines) = (Arc::clone(&needle_count), Arc::clone(&tail));
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { return };
            if line.contains(needle) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(file) = file.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            let mut tail = lines.lock().unwrap_or_else(|p| p.into_inner());
            tail.push_back(line);
            if tail.len() > 20 {
                tail.pop_front();
            }
        }
    });
    Log { needle_count, tail }
}

impl Log {
    fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One update as driven: which, when it was due, when `apply` was called.
struct Update {
    key: Key,
    due: Instant,
    applied: Instant,
}

/// Drives `total` updates at `rate`/s from `start`; runs on its own thread.
fn drive(
    api: &FakeApiServer,
    run: usize,
    rate: u32,
    total: usize,
    tasks: usize,
    start: Instant,
) -> Vec<Update> {
    let mut open: VecDeque<String> = VecDeque::new();
    let mut created = 0usize;
    let mut updates = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        let (key, object) = if open.len() > LAG {
            let name = open.pop_front().expect("open workflow");
            let mut wf = api
                .get(Kind::Workflow, NAMESPACE, &name)
                .expect("stored workflow");
            let at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            synthetic::finish(&mut wf, "Succeeded", &at);
            ((name, 1), wf)
        } else {
            let name = format!("lat-{created}");
            let uid = format!("00000000-0000-4000-{:04x}-{created:012}", run % 0x10000);
            created += 1;
            open.push_back(name.clone());
            let wf = synthetic::workflow(NAMESPACE, &name, &uid, tasks);
            ((name, 0), wf)
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let applied = Instant::now();
        api.apply(object);
        updates.push(Update { key, due, applied });
    }
    updates
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
    sorted.get(i).copied()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

/// Runs one subject on one sink at one rate; returns its JSON line.
async fn run_one(
    settings: &Settings,
    subject: &Subject,
    sink: SinkKind,
    rate: u32,
    run: usize,
) -> Value {
    let api = Arc::new(FakeApiServer::start_with(1_000_000, Duration::from_secs(1)).await);
    api.set_cost(settings.cost);
    let dir = std::env::temp_dir().join(format!("kfp-latency-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let floor = matches!(subject, Subject::Floor);
    let topic = format!("lat-{}-r{run}", std::process::id());
    let (uri, consumer) = match sink {
        SinkKind::Stdout => ("stdout".to_owned(), None),
        SinkKind::Nats => {
            let url = settings.nats_url.as_deref().expect("NATS_URL");
            let task = nats_consumer(url, run, tx.clone()).await;
            let subject = if floor { "raw" } else { "{type}" };
            (format!("{url}/lat.r{run}.{subject}"), Some(task))
        }
        SinkKind::Kafka => {
            let bootstrap = settings
                .kafka_bootstrap
                .as_deref()
                .expect("KAFKA_BOOTSTRAP");
            let task = kafka_consumer(bootstrap, &topic, tx.clone()).await;
            (format!("kafka://{bootstrap}/{topic}"), Some(task))
        }
    };
    let (mut command, needle, ready_at) = match subject {
        Subject::Bridge {
            path, checkpoint, ..
        } => {
            let checkpoint = match checkpoint {
                CheckpointKind::File => format!("file:{}", dir.join("checkpoint").display()),
                CheckpointKind::ConfigMap => format!("configmap:default/latency-r{run}"),
            };
            let mut c = Command::new(path);
            c.arg("run")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--checkpoint", &checkpoint, "--sink", &uri])
                .args(["--log", "info", "--log-format", "json"])
                .args(["--admin-addr", "127.0.0.1:0"])
                .args(
                    std::env::var("BRIDGE_ARGS")
                        .unwrap_or_default()
                        .split_whitespace(),
                );
            // Workflows and Events.
            (c, "watch synced", 2)
        }
        Subject::Floor => {
            let mut c = Command::new(std::env::current_exe().expect("this binary"));
            c.arg("floor").arg(&kubeconfig).arg(&uri);
            (c, "floor synced", 1)
        }
    };
    let stdout = if sink == SinkKind::Stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = command
        .env_clear()
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {subject:?}: {e}"));
    if let Some(out) = child.stdout.take() {
        read_lines(out, tx.clone());
    }
    drop(tx);
    let keep = std::env::var_os("LOG_DIR").map(|d| {
        let label = match subject {
            Subject::Bridge {
                label, checkpoint, ..
            } => format!("{label}-{checkpoint:?}"),
            Subject::Floor => "floor".to_owned(),
        };
        PathBuf::from(d).join(format!("{run:03}-{label}-{}-{rate}.log", sink.name()))
    });
    let log = watch_stderr(&mut child, needle, keep);
    let waited = Instant::now();
    while log.needle_count.load(Ordering::SeqCst) < ready_at {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{subject:?} exited ({status}) before it synced:\n{}",
                log.tail()
            );
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "{subject:?} not synced after 60 s:\n{}",
            log.tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let collector = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some((at, payload)) = rx.recv().await {
                let class = classify(&payload);
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.messages += 1;
                if let Some((key, marker)) = class {
                    seen.first.entry(key.clone()).or_insert(at);
                    if marker {
                        seen.marker.entry(key).or_insert(at);
                    }
                }
            }
        })
    };
    api.reset_costs();
    let total = (f64::from(rate) * (settings.warmup + settings.seconds)).round() as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + Duration::from_secs_f64(settings.warmup);
    let driver = {
        let (api, tasks) = (Arc::clone(&api), settings.tasks);
        std::thread::spawn(move || drive(&api, run, rate, total, tasks, start))
    };
    let updates = tokio::task::spawn_blocking(move || driver.join().expect("driver"))
        .await
        .expect("driver thread");
    let driven_s = updates
        .last()
        .map_or(0.0, |u| (u.applied - start).as_secs_f64());
    let measured: Vec<&Update> = updates.iter().filter(|u| u.due >= measured_from).collect();
    let drain_start = Instant::now();
    loop {
        let done = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            measured.iter().all(|u| seen.marker.contains_key(&u.key))
        };
        if done || drain_start.elapsed() > DRAIN {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "latency: {subject:?} exited early ({status}):\n{}",
                log.tail()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let costs = api.costs();
    stop(&mut child);
    if let Some(task) = consumer {
        task.abort();
    }
    collector.abort();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut marker = Vec::new();
    let mut first = Vec::new();
    for u in &measured {
        if let Some(at) = seen.marker.get(&u.key) {
            marker.push(ms(at.saturating_duration_since(u.applied)));
        }
        if let Some(at) = seen.first.get(&u.key) {
            first.push(ms(at.saturating_duration_since(u.applied)));
        }
    }
    marker.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    let mut late: Vec<f64> = measured
        .iter()
        .map(|u| ms(u.applied.saturating_duration_since(u.due)))
        .collect();
    late.sort_by(f64::total_cmp);
    let writes = costs
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "create" | "update" | "patch"))
        .fold((0, 0), |(n, b), (_, c)| {
            (n + c.requests, b + c.request_bytes)
        });
    let (who, binary, checkpoint) = match subject {
        Subject::Bridge {
            label, checkpoint, ..
        } => (
            "bridge",
            label.as_str(),
            match checkpoint {
                CheckpointKind::File => "file",
                CheckpointKind::ConfigMap => "configmap",
            },
        ),
        Subject::Floor => ("floor", "floor", "-"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "who": who,
        "binary": binary,
        "sink": sink.name(),
        "checkpoint": checkpoint,
        "rate": rate,
        "seconds": settings.seconds,
        "updates": measured.len(),
        "arrived": marker.len(),
        "missing": measured.len() - marker.len(),
        "p50_ms": round3(quantile(&marker, 0.5)),
        "p99_ms": round3(quantile(&marker, 0.99)),
        "max_ms": round3(marker.last().copied()),
        "first_p50_ms": round3(quantile(&first, 0.5)),
        "first_p99_ms": round3(quantile(&first, 0.99)),
        "messages": seen.messages,
        "driven_rate": round3((driven_s > 0.0).then(|| updates.len() as f64 / driven_s)),
        "driver_late_p99_ms": round3(quantile(&late, 0.99)),
        "apiserver_writes": writes.0,
        "apiserver_write_bytes": writes.1,
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn print_table(rows: &[Value]) {
    type Group = (String, String, String, u64);
    let mut groups: BTreeMap<Group, Vec<&Value>> = BTreeMap::new();
    for r in rows {
        let key = (
            r["sink"].as_str().unwrap_or("").to_owned(),
            r["checkpoint"].as_str().unwrap_or("").to_owned(),
            r["binary"].as_str().unwrap_or("").to_owned(),
            r["rate"].as_u64().unwrap_or(0),
        );
        groups.entry(key).or_default().push(r);
    }
    let med =
        |rs: &[&Value], field: &str| median(rs.iter().filter_map(|r| r[field].as_f64()).collect());
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "\n{:<15} {:<10} {:<8} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8} | {:>7}",
        "sink",
        "checkpoint",
        "binary",
        "rate",
        "p50 ms",
        "p99 ms",
        "floor p50",
        "floor p99",
        "Δp50",
        "Δp99",
        "missing"
    );
    for ((sink, checkpoint, binary, rate), rs) in &groups {
        if binary == "floor" {
            continue;
        }
        let floor = groups
            .get(&(sink.clone(), "-".to_owned(), "floor".to_owned(), *rate))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (p50, p99) = (med(rs, "p50_ms"), med(rs, "p99_ms"));
        let (f50, f99) = (med(floor, "p50_ms"), med(floor, "p99_ms"));
        let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        let missing: u64 = rs.iter().filter_map(|r| r["missing"].as_u64()).sum();
        println!(
            "{sink:<15} {checkpoint:<10} {binary:<8} {rate:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8} | {missing:>7}",
            fmt(p50),
            fmt(p99),
            fmt(f50),
            fmt(f99),
            fmt(diff(p50, f50)),
            fmt(diff(p99, f99)),
        );
    }
}

fn bench(args: &[String]) {
    let settings = settings(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut subjects = vec![Subject::Floor];
    for checkpoint in &settings.checkpoints {
        for (label, path) in &settings.bridges {
            subjects.push(Subject::Bridge {
                label: label.clone(),
                path: path.clone(),
                checkpoint: *checkpoint,
            });
        }
    }
    let mut rows = Vec::new();
    let mut run = 0;
    for _round in 0..settings.rounds {
        for sink in &settings.sinks {
            for rate in &settings.rates {
                for subject in &subjects {
                    run += 1;
                    let row = runtime.block_on(run_one(&settings, subject, *sink, *rate, run));
                    println!("{row}");
                    let _ = std::io::stdout().flush();
                    rows.push(row);
                }
            }
        }
    }
    print_table(&rows);
}

/// The floor's publisher: the raw client of the broker.
enum Publisher {
    Stdout,
    Nats {
        js: Box<jetstream::Context>,
        subject: String,
    },
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
}

impl Publisher {
    async fn connect(uri: &str) -> Self {
        if uri == "stdout" {
            return Publisher::Stdout;
        }
        if let Some(rest) = uri.strip_prefix("nats://") {
            let (server, subject) = rest.split_once('/').expect("nats://HOST:PORT/SUBJECT");
            let client = async_nats::connect(server).await.expect("connect to NATS");
            return Publisher::Nats {
                js: Box::new(jetstream::new(client)),
                subject: subject.to_owned(),
            };
        }
        let rest = uri
            .strip_prefix("kafka://")
            .expect("stdout, nats:// or kafka://");
        let (bootstrap, topic) = rest.split_once('/').expect("kafka://BOOTSTRAP/TOPIC");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (key, value) in sink_kafka::DEFAULTS {
            config.set(key, value);
        }
        Publisher::Kafka {
            producer: config.create().expect("producer"),
            topic: topic.to_owned(),
        }
    }

    async fn publish(&self, uid: &str, bytes: Vec<u8>) {
        match self {
            Publisher::Stdout => {
                let mut line = bytes;
                line.push(b'\n');
                let mut out = std::io::stdout().lock();
                out.write_all(&line).expect("stdout");
                out.flush().expect("stdout");
            }
            Publisher::Nats { js, subject } => {
                let ack = js
                    .publish(subject.clone(), bytes.into())
                    .await
                    .expect("publish");
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        eprintln!("floor: PubAck: {e}");
                    }
                });
            }
            Publisher::Kafka { producer, topic } => {
                let record = FutureRecord::to(topic).key(uid).payload(&bytes);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queued");
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => eprintln!("floor: delivery: {e}"),
                        Err(e) => eprintln!("floor: delivery: {e}"),
                    }
                });
            }
        }
    }
}

/// The floor: a minimal kube-rs watcher handing each workflow's bytes to the raw client.
async fn floor(kubeconfig: &str, uri: &str) {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::watcher;
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "workflows");
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let publisher = Publisher::connect(uri).await;
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let uid = object.metadata.uid.clone().unwrap_or_default();
                let bytes = serde_json::to_vec(&object).expect("serialize");
                publisher.publish(&uid, bytes).await;
            }
            Ok(watcher::Event::InitDone) => eprintln!("floor synced"),
            Ok(_) => {}
            Err(e) => {
                eprintln!("floor: watch: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("floor") => {
            let (Some(kubeconfig), Some(uri)) = (args.get(1), args.get(2)) else {
                eprintln!(
                    "usage: latency floor KUBECONFIG stdout|nats://HOST:PORT/SUBJECT|kafka://BOOTSTRAP/TOPIC"
                );
                std::process::exit(2);
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(floor(kubeconfig, uri));
        }
        _ => bench(&args),
    }
}
