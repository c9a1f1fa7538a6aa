//! The Kafka sink over TLS with SASL SCRAM-SHA-256 and SCRAM-SHA-512 against a real broker that
//! has them: nisshi (the renamed tansu, from crates.io), with a private CA made for the run.
//!
//! nisshi takes about 25 minutes to build (nightly toolchain, `--features libsql` for TLS and
//! SCRAM users), so it is not in the default gate: `scripts/test-kafka-security.sh` installs it
//! and runs this test with `KFP_TEST_NISSHI` naming the binary. Without that variable the test
//! says so and does nothing. nisshi has no SASL PLAIN (its authenticator knows only SCRAM), and no
//! client-certificate authentication; docs/testing.md says what else was tried.

use crate::nats_auth::{delivered, pki, refused_with};
use crate::support;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::bridge::{Scratch, all_recordings, replayed};
use support::kafka_server::free_port;

const TOPIC: &str = "kfp";
const USERS: [(&str, &str, &str); 2] = [
    ("bridge256", "pw-256-9c1e4b7a", "scram256"),
    ("bridge512", "pw-512-2d8f6a03", "scram512"),
];

/// A nisshi broker on `port` keeping its data in `dir/nisshi.db`; `tls` = (cert, key) turns on
/// TLS and required authentication.
struct Nisshi(Child);

impl Nisshi {
    fn start(bin: &str, dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .current_dir(dir)
            .args(["broker", "--cluster-id", "kfp-test", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://nisshi.db"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("nisshi-{port}.log"))).expect("log"));
        if let Some((cert, key)) = tls {
            command
                .arg("--authentication")
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        let child = command.spawn().expect("nisshi starts");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nisshi did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nisshi(child)
    }
}

impl Drop for Nisshi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nisshi_ok(bin: &str, args: &[&str]) {
    let out = Command::new(bin).args(args).output().expect("nisshi runs");
    assert!(
        out.status.success(),
        "nisshi {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count_records(port: u16, ca: &Path, (user, password, _): (&str, &str, &str)) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("ssl.ca.location", ca.display().to_string())
        .set("group.id", format!("kfp-security-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut total = 0;
    for p in 0..3 {
        let (low, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .expect("watermarks over SASL_SSL");
        total += (high - low) as usize;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_with_scram_sha_256_and_512_and_refusals() {
    let Ok(bin) = std::env::var("KFP_TEST_NISSHI") else {
        eprintln!(
            "KFP_TEST_NISSHI is not set: this test needs the nisshi broker; scripts/test-kafka-security.sh installs it and runs it"
        );
        return;
    };
    let scratch = Scratch::new("kafka-security");
    let (ours, theirs) = (scratch.path("pki"), scratch.path("other-pki"));
    for dir in [&ours, &theirs] {
        std::fs::create_dir_all(dir).expect("pki dir");
        pki(dir);
    }
    // Users and the topic are made over a plain listener (nisshi's own CLI, Kafka's
    // AlterUserScramCredentials), then the broker starts again on the same storage with TLS and
    // authentication required.
    let plain = free_port();
    {
        let _setup = Nisshi::start(&bin, &scratch.0, plain, None);
        let broker = format!("tcp://127.0.0.1:{plain}");
        for (user, password, mechanism) in USERS {
            nisshi_ok(
                &bin,
                &[
                    "user",
                    "create",
                    "--broker",
                    &broker,
                    "--mechanism",
                    mechanism,
                    user,
                    password,
                ],
            );
        }
        nisshi_ok(&bin, &["topic", "create", "--broker", &broker, TOPIC]);
    }
    let port = free_port();
    let _broker = Nisshi::start(
        &bin,
        &scratch.0,
        port,
        Some((&ours.join("server.pem"), &ours.join("server.key"))),
    );
    let input = all_recordings(&scratch);
    let want = replayed(&input).len();
    let sink = |mechanism: &str, user: &str, password: &str, ca: &Path| {
        format!(
            "kafka://127.0.0.1:{port}/{TOPIC}?security.protocol=SASL_SSL&sasl.mechanism={mechanism}&sasl.username={user}&sasl.password={password}&ssl.ca.location={}&message.timeout.ms=10000",
            ca.display()
        )
    };
    let ca = ours.join("ca.pem");
    for ((user, password, _), mechanism) in USERS.iter().zip(["SCRAM-SHA-256", "SCRAM-SHA-512"]) {
        let sent = delivered(&input, &sink(mechanism, user, password, &ca)).await;
        assert_eq!(sent as usize, want, "{mechanism}: every event delivered");
    }
    assert_eq!(
        count_records(port, &ca, USERS[1]),
        2 * want,
        "both runs' records are on the broker"
    );

    let secrets = [USERS[0].1, USERS[1].1, "pw-wrong-5e0b"];
    for (what, uri) in [
        (
            "a wrong password",
            sink("SCRAM-SHA-256", USERS[0].0, "pw-wrong-5e0b", &ca),
        ),
        (
            "a user of the other mechanism",
            sink("SCRAM-SHA-256", USERS[1].0, USERS[1].1, &ca),
        ),
        (
            "a CA that did not sign the server",
            sink(
                "SCRAM-SHA-512",
                USERS[1].0,
                USERS[1].1,
                &theirs.join("ca.pem"),
            ),
        ),
    ] {
        // 2: the Kafka sink refused at start, as in kafka_delivery.rs.
        let err = refused_with(&input, &uri, 2);
        assert!(
            err.contains("kafka://127.0.0.1"),
            "{what}: the sink is named: {err}"
        );
        for secret in secrets {
            assert!(!err.contains(secret), "{what}: a password is in the log");
        }
        eprintln!("{what}: {}", err.lines().last().unwrap_or(""));
    }
    assert_eq!(
        count_records(port, &ca, USERS[1]),
        2 * want,
        "nothing over a refused connection"
    );
}
