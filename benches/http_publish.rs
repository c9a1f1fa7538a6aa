//! The two halves of `scripts/bench_http.sh`, which compares `replay → HTTP` with a minimal raw
//! client posting the same requests:
//!
//! - `receive PORT_FILE [RECORD]`: an HTTP receiver on 127.0.0.1 answering 202 to every POST;
//!   with RECORD, each request's headers and body are appended to that file (one JSON line each).
//!   Stops on a POST to `/stop`.
//! - `raw RECORD URL IN_FLIGHT`: a reqwest client (same settings as the sink: rustls, no redirects,
//!   keep-alive) posting every recorded request with IN_FLIGHT concurrent; prints requests/s and
//!   the p50/p99 request latency as one JSON line.

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use futures_util::stream::{self, StreamExt};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Recorder = Arc<Mutex<Option<std::io::BufWriter<std::fs::File>>>>;

#[derive(Clone)]
struct Shared {
    record: Recorder,
    stop: Arc<tokio::sync::Notify>,
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    if uri.path() == "/stop" {
        s.stop.notify_one();
        return StatusCode::OK;
    }
    if let Some(out) = s.record.lock().expect("lock").as_mut() {
        let headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("ce-") || k.as_str() == "content-type")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let line = serde_json::json!({
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let _ = writeln!(out, "{line}");
    }
    StatusCode::ACCEPTED
}

async fn receive(port_file: &str, record: Option<&str>) {
    let record = record
        .map(|path| std::io::BufWriter::new(std::fs::File::create(path).expect("record file")));
    let shared = Shared {
        record: Arc::new(Mutex::new(record)),
        stop: Arc::default(),
    };
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(port_file, port.to_string()).expect("port file");
    let stop = Arc::clone(&shared.stop);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.notified().await })
        .await
        .expect("serve");
    if let Some(out) = shared.record.lock().expect("lock").as_mut() {
        out.flush().expect("flush");
    }
}

async fn raw(record: &str, url: &str, in_flight: usize) {
    let requests: Vec<(reqwest::header::HeaderMap, Vec<u8>)> =
        std::io::BufReader::new(std::fs::File::open(record).expect("record"))
            .lines()
            .map(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(&line.expect("line")).expect("json");
                let mut headers = reqwest::header::HeaderMap::new();
                for pair in v["headers"].as_array().expect("headers") {
                    let name = pair[0].as_str().expect("name");
                    let value = pair[1].as_str().expect("value");
                    headers.insert(
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                        value.parse().expect("value"),
                    );
                }
                (
                    headers,
                    v["body"].as_str().expect("body").as_bytes().to_vec(),
                )
            })
            .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let count = requests.len();
    let start = Instant::now();
    let latencies: Vec<Duration> = stream::iter(requests)
        .map(|(headers, body)| {
            let request = client.post(url).headers(headers).body(body);
            async move {
                let t0 = Instant::now();
                let response = request.send().await.expect("response");
                assert!(response.status().is_success());
                let _ = response.bytes().await;
                t0.elapsed()
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = start.elapsed();
    support::report(count, elapsed, latencies);
}

fn main() {
    let args = support::args();
    let runtime = support::runtime();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["receive", port_file] => runtime.block_on(receive(port_file, None)),
        ["receive", port_file, record] => runtime.block_on(receive(port_file, Some(record))),
        ["raw", record, url, in_flight] => {
            runtime.block_on(raw(record, url, in_flight.parse().expect("IN_FLIGHT")))
        }
        _ => {
            eprintln!("usage: http_publish receive PORT_FILE [RECORD] | raw RECORD URL IN_FLIGHT");
            std::process::exit(2);
        }
    }
}
