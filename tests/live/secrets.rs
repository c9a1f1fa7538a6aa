//! Secrets never leave the bridge: credentials in a sink URI, a bearer token file and a
//! credential header, while the receiver refuses every event (so that errors, retries, readiness
//! and dead letters all have something to say), are in none of the log, `/metrics`, `/readyz`
//! or the dead-letter file; a password in a NATS or AMQP URI is in none of the start-up errors.

use crate::support;

use std::time::Duration;
use support::bridge::{BIN, Scratch, admin_addr, get, stderr, wait};
use support::live::*;

const USERINFO: &str = "s3cr3t-userinfo-7f1e";
const TOKEN: &str = "s3cr3t-token-9a2b";
const HEADER: &str = "s3cr3t-header-4c8d";
const NATS_PASSWORD: &str = "s3cr3t-nats-1d5a";
const AMQP_PASSWORD: &str = "s3cr3t-amqp-6e0f";

/// A receiver that refuses every request for good (400), counting them.
async fn refusing_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&seen);
    let app = axum::Router::new().fallback(move || {
        let counter = std::sync::Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::BAD_REQUEST, "no thanks")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("127.0.0.1:{}", addr.port()), seen)
}

fn assert_clean(channel: &str, text: &str) {
    for secret in [USERINFO, TOKEN, HEADER, NATS_PASSWORD, AMQP_PASSWORD] {
        assert!(
            !text.contains(secret),
            "{secret} appears in {channel}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_a_metric_readyz_or_a_dead_letter() {
    let scratch = Scratch::new("live-secrets");
    let cluster = Cluster::start(&scratch).await;
    let (receiver, seen) = refusing_receiver().await;
    let token = scratch.path("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let dead = scratch.path("dead.jsonl");
    let out = scratch.path("out.jsonl");
    let http = format!(
        "http://hook:{USERINFO}@{receiver}/events?token_file={}&header=X-Api-Key:%20{HEADER}",
        token.display()
    );
    let dead_letter = format!("file:{}", dead.display());
    let extra = [
        "--sink",
        http.as_str(),
        "--dead-letter",
        dead_letter.as_str(),
        "--log",
        "debug",
    ];
    let mut bridge = live_bridge(&cluster, &out, &scratch.path("state"), &extra);
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    let addr = admin_addr(&mut bridge).await;
    for i in 0..3 {
        cluster.api.apply(fake_apiserver::synthetic::workflow(
            "team-a",
            &format!("secretive-{i}"),
            &format!("00000000-0000-4000-8000-0000000005e{i}"),
            2,
        ));
    }
    let t0 = std::time::Instant::now();
    while count_lines(&dead) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing dead-lettered: {}",
            stderr(&mut bridge)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    let (_, metrics) = get(&addr, "/metrics").await;
    let (_, readyz) = get(&addr, "/readyz").await;
    sigterm(&bridge);
    let _ = wait(&mut bridge, Duration::from_secs(30)).await;
    let log = stderr(&mut bridge);
    eprintln!(
        "{} requests refused, {} dead letters, log {} lines, /readyz: {readyz}",
        seen.load(std::sync::atomic::Ordering::SeqCst),
        count_lines(&dead),
        log.lines().count()
    );
    // The sink is named in all of them, its credentials masked.
    let named = format!("http://***@{receiver}/events?token_file=***&header=***");
    assert!(log.contains(&named), "{log}");
    assert!(readyz.contains(&named), "{readyz}");
    assert_clean("the log", &log);
    assert_clean("/metrics", &metrics);
    assert_clean("/readyz", &readyz);
    assert_clean(
        "the dead letters",
        &std::fs::read_to_string(&dead).expect("dead letters"),
    );

    // Start-up errors of sinks that connect at start, with a password in the URI: the port is
    // closed, the error names the sink, the password is not in it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let recording = scratch.path("one.jsonl");
    write_recording(&recording, &[]);
    for sink in [
        format!("nats://bridge:{NATS_PASSWORD}@127.0.0.1:{closed}/kfp"),
        format!("amqp://bridge:{AMQP_PASSWORD}@127.0.0.1:{closed}/%2f?exchange=kfp"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["replay", &recording.display().to_string(), "--sink", &sink])
            .env_clear()
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{sink}: {err}");
        assert!(err.contains("127.0.0.1"), "the sink is named: {err}");
        assert_clean("a start-up error", &err);
    }
}
