//! A real Kafka-protocol broker for a test (noida-db, a single-broker Kafka 3.8 emulator): loopback
//! only, its own port and data directory; stopped (and its files removed) when dropped.
//! `scripts/test.sh` installs it; without it the test fails and says how to get it.
//!
//! `KFP_TEST_KAFKA=tansu` runs the same tests against tansu 0.6 instead (a second, independent
//! Kafka-protocol implementation; `cargo install tansu --version 0.6.0 --locked
//! --no-default-features --features dynostore`, ~10 min, so not in the default gate). tansu does
//! not create topics on first use: tests name theirs with [`KafkaServer::topics`]. Its memory
//! storage does not survive a restart, so there an outage is the broker frozen (SIGSTOP: its
//! connections hang, requests time out) and thawed (SIGCONT) rather than stopped and restarted.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KafkaServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

impl KafkaServer {
    pub fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kfp-kafka-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.resume();
        server
    }

    /// The broker under test: `noida` (default) or `tansu`.
    pub fn kind() -> String {
        std::env::var("KFP_TEST_KAFKA").unwrap_or_else(|_| "noida".into())
    }

    /// Creates these topics (one partition) where the broker does not create topics on first use.
    pub async fn topics(&self, topics: &[&str]) {
        if Self::kind() == "tansu" {
            for topic in topics {
                self.create_topic(topic, 1).await;
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port with the same data (tansu: thaws the frozen broker).
    pub fn resume(&mut self) {
        if self.child.is_some() {
            self.thaw();
            return;
        }
        let mut command = if Self::kind() == "tansu" {
            let url = format!("tcp://127.0.0.1:{}", self.port);
            let mut tansu = Command::new("tansu");
            tansu
                .args(["broker", "--cluster-id", "test", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .env_remove("STORAGE_ENGINE")
                .env_remove("ADVERTISED_LISTENER_URL")
                .env_remove("LISTENER_URL")
                .env_remove("CLUSTER_ID");
            tansu
        } else {
            let mut noida = Command::new("noida-db");
            noida
                .args([
                    "start",
                    "--only",
                    "kafka",
                    "--host",
                    "127.0.0.1",
                    "--kafka-port",
                ])
                .arg(self.port.to_string())
                .arg("--data-dir")
                .arg(self.dir.join("data"));
            noida
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start noida-db ({e}); run scripts/test.sh, or cargo install noida-db --version 0.2.3 --locked --no-default-features --features kafka"
                )
            });
        self.child = Some(child);
        // Ready when a librdkafka client gets metadata back (an open port is not enough).
        let consumer: BaseConsumer = self.client_config().create().expect("client");
        let t0 = Instant::now();
        while consumer
            .fetch_metadata(None, Duration::from_millis(500))
            .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{} did not start",
                Self::kind()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the broker (SIGSTOP): it is unreachable, its connections hang and requests time
    /// out, and nothing it acknowledged is lost, unlike a restart of noida-db (which answers
    /// produce requests after its final save on SIGTERM, so records it acknowledged in that
    /// moment are gone when it comes back). [`KafkaServer::thaw`] ends it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Ends a [`KafkaServer::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Stops the broker (SIGTERM, so it saves its data) and waits for it (tansu: freezes it).
    pub fn stop(&mut self) {
        if Self::kind() == "tansu" {
            self.freeze();
            return;
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // A frozen broker handles SIGTERM (and saves its data) only once thawed.
        self.thaw();
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let t0 = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topics");
        for result in results {
            result.expect("topic created");
        }
    }

    /// Reads every record of `topic` from the beginning until `count` arrived (or `limit` passed),
    /// with an independent consumer.
    pub fn consume(&self, topic: &str, count: usize, limit: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", format!("test-{}-{topic}", std::process::id()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.len() < count && t0.elapsed() < limit {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("consume");
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                partition: message.partition(),
                key: message.key().map(<[u8]>::to_vec),
                headers,
                value: message.payload().unwrap_or_default().to_vec(),
            });
        }
        out
    }

    /// The high watermark of each of `topic`'s partitions (what the broker holds), in order.
    pub fn high_watermarks(&self, topic: &str) -> Vec<i64> {
        let consumer: BaseConsumer = self.client_config().create().expect("client");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        (0..partitions)
            .map(|p| {
                let partition = i32::try_from(p).expect("partition");
                consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Partition count per topic, from the broker's metadata.
    pub fn partitions(&self) -> BTreeMap<String, usize> {
        let consumer: BaseConsumer = self.client_config().create().expect("client");
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect()
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
