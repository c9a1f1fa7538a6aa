//! What the raw-client benchmarks share: their arguments, a runtime, and the JSON line they print.

use std::time::Duration;

/// The command-line arguments after the program name, without the `--bench` cargo adds.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Prints `{"events", "seconds", "per_second", "p50_ms", "p99_ms"}` for one run.
pub fn report(count: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{}",
        serde_json::json!({
            "events": count,
            "requests": count,
            "seconds": elapsed.as_secs_f64(),
            "per_second": count as f64 / elapsed.as_secs_f64(),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
        })
    );
}
