//! The delivery engine with scripted sinks, in virtual time: per-run order through failures,
//! backoff and `Retry-After`, independent lanes, back-pressure, dead letter, shutdown.

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use kfp_event_bridge::encode::{DEAD_LETTER_REASON, DEAD_LETTER_SINK};
use kfp_event_bridge::pipeline::{Delivery, Filter, LaneConfig, RetryPolicy, Route};
use sink_core::{KeyOrder, MemorySink, Script, Sink, SinkError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

fn event(run: usize, n: usize, ty: &str) -> Event {
    EventBuilderV10::new()
        .id(format!("r{run}-e{n}"))
        .source("/test")
        .ty(format!("org.kubeflow.pipelines.{ty}"))
        .extension("partitionkey", format!("run-{run}"))
        .extension(
            "namespace",
            if run.is_multiple_of(2) {
                "team-a"
            } else {
                "team-b"
            },
        )
        .build()
        .expect("event")
}

/// `runs` runs of `per_run` events each, interleaved run by run.
fn interleaved(runs: usize, per_run: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for n in 0..per_run {
        for run in 0..runs {
            out.push(event(run, n, "task.started"));
        }
    }
    out
}

fn route(sink: &MemorySink) -> Route {
    Route {
        name: sink.name().to_owned(),
        sink: Arc::new(sink.clone()),
        filter: Filter::default(),
        format: Default::default(),
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

/// Asserts each run's events were acknowledged in the order they were sent, each exactly once.
fn assert_per_run_order(acked: &[Event], sent: &[Event]) {
    let ids: Vec<&str> = acked.iter().map(|e| e.id()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event was acknowledged twice");
    assert_eq!(ids.len(), sent.len(), "events missing");
    let key = |e: &Event| e.extension("partitionkey").map(|v| v.to_string());
    let mut by_run: HashMap<_, Vec<&str>> = HashMap::new();
    for e in acked {
        by_run.entry(key(e)).or_default().push(e.id());
    }
    let mut want: HashMap<_, Vec<&str>> = HashMap::new();
    for e in sent {
        want.entry(key(e)).or_default().push(e.id());
    }
    assert_eq!(by_run, want, "a run's events left out of order");
}

async fn deliver_all(
    sink: &MemorySink,
    sent: &[Event],
) -> Arc<kfp_event_bridge::pipeline::LaneStats> {
    let mut delivery = Delivery::start(vec![route(sink)], None, &LaneConfig::default(), &retry());
    let stats = delivery.stats();
    for e in sent.iter().cloned() {
        delivery.send(e).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    let unfinished = delivery.finish(std::future::pending()).await;
    assert!(unfinished.pending.is_empty());
    let lane = Arc::clone(&stats[0].1);
    assert_eq!(lane.delivered.load(Ordering::Relaxed), sent.len() as u64);
    assert_eq!(lane.depth.load(Ordering::Relaxed), 0);
    assert!(lane.retried.load(Ordering::Relaxed) > 0);
    lane
}

#[tokio::test(start_paused = true)]
async fn one_in_flight_sinks_keep_run_order_through_scattered_failures() {
    // Requests that fail independently of each other, as HTTP requests do.
    let sink = MemorySink::new("mem").with_key_order(KeyOrder::OneInFlight);
    sink.set_ack_delay(Duration::from_millis(3));
    sink.script((0..400).map(|i| match i % 17 {
        3 => Script::RejectTransient,
        9 => Script::NackTransient,
        _ => Script::Ack,
    }));
    let sent = interleaved(20, 15);
    deliver_all(&sink, &sent).await;
    assert_per_run_order(&sink.acked(), &sent);
}

#[tokio::test(start_paused = true)]
async fn pipelined_sinks_keep_run_order_through_outages() {
    // An ordered connection that drops now and then: while it is down everything fails.
    let sink = MemorySink::new("mem");
    sink.set_ack_delay(Duration::from_millis(3));
    let flapping = {
        let sink = sink.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(7)).await;
                sink.set_down(true);
                tokio::time::sleep(Duration::from_millis(2)).await;
                sink.set_down(false);
            }
        })
    };
    let sent = interleaved(20, 15);
    deliver_all(&sink, &sent).await;
    flapping.abort();
    assert_per_run_order(&sink.acked(), &sent);
}

/// Virtual time to deliver `sent` to a one-in-flight sink whose acknowledgements take 10 ms.
async fn time_to_deliver(sent: &[Event]) -> Duration {
    let sink = MemorySink::new("http-like").with_key_order(KeyOrder::OneInFlight);
    sink.set_ack_delay(Duration::from_millis(10));
    let mut delivery = Delivery::start(vec![route(&sink)], None, &LaneConfig::default(), &retry());
    let t0 = Instant::now();
    for e in sent.iter().cloned() {
        delivery.send(e).await;
    }
    delivery.finish(std::future::pending()).await;
    assert_per_run_order(&sink.acked(), sent);
    t0.elapsed()
}

#[tokio::test(start_paused = true)]
async fn one_in_flight_sinks_never_overlap_a_run() {
    // One run, one at a time: 20 events × 10 ms each.
    let one_run = time_to_deliver(&interleaved(1, 20)).await;
    assert!(one_run >= Duration::from_millis(200), "{one_run:?}");
    // Twenty runs overlap freely: the same 20 events take one round trip, not twenty.
    let twenty_runs = time_to_deliver(&interleaved(20, 1)).await;
    assert!(twenty_runs < Duration::from_millis(20), "{twenty_runs:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_and_probes_one_at_a_time_while_down() {
    let sink = MemorySink::new("down");
    sink.set_down(true);
    let sent = interleaved(5, 2);
    let policy = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
        ..RetryPolicy::default()
    };
    let mut delivery = Delivery::start(vec![route(&sink)], None, &LaneConfig::default(), &policy);
    let stats = delivery.stats();
    for e in sent.clone() {
        delivery.send(e).await;
    }
    // Down for 60 s (virtual): delays 0.5–1, 1–2, 2–4, 4–8, then 4–8 s each (equal jitter), so
    // between 10 and 18 attempts whatever the jitter — not ten events' worth per round.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts = stats[0].1.retried.load(Ordering::Relaxed);
    assert!(
        (10..=18).contains(&attempts),
        "attempts in 60 s of outage: {attempts} (probing one event at a time)"
    );
    sink.set_down(false);
    let t0 = Instant::now();
    delivery.finish(std::future::pending()).await;
    assert!(
        t0.elapsed() <= Duration::from_secs(8),
        "resumed within one max delay"
    );
    assert_per_run_order(&sink.acked(), &sent);
}

/// A sink whose first `failing` messages are accepted and then, a second later, all nacked
/// together (a broker restarting under a full window); later ones are acknowledged.
struct Blip {
    inner: MemorySink,
    failing: std::sync::atomic::AtomicUsize,
}

impl Sink for Blip {
    fn name(&self) -> &str {
        "blip"
    }
    fn publish<'a>(&'a self, event: &'a Event) -> sink_core::Accepting<'a> {
        let left = self.failing.load(Ordering::SeqCst);
        if left > 0 {
            self.failing.store(left - 1, Ordering::SeqCst);
            let receipt: sink_core::Receipt = Box::pin(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(SinkError::transient("blip", "connection reset"))
            });
            return Box::pin(std::future::ready(Ok(receipt)));
        }
        self.inner.publish(event)
    }
}

#[tokio::test(start_paused = true)]
async fn a_window_failing_together_is_one_failure_not_a_backoff_at_its_cap() {
    // 200 runs' first events in flight together, all nacked at once; then the sink is fine.
    let inner = MemorySink::new("inner");
    let sink = Arc::new(Blip {
        inner: inner.clone(),
        failing: 200.into(),
    });
    let sent = interleaved(200, 2);
    let policy = RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let route = Route {
        name: "blip".into(),
        sink,
        filter: Filter::default(),
        format: Default::default(),
    };
    let mut delivery = Delivery::start(vec![route], None, &LaneConfig::default(), &policy);
    let stats = delivery.stats();
    let t0 = Instant::now();
    for e in sent.clone() {
        delivery.send(e).await;
    }
    delivery.finish(std::future::pending()).await;
    // The nacks at 1 s, one failure's backoff (50–100 ms), the probe and the rest: well under
    // 2 s. Counting the 200 nacks as 200 failures put the backoff at its cap (30–60 s).
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "delivered after {:?}",
        t0.elapsed()
    );
    assert_eq!(stats[0].1.retried.load(Ordering::Relaxed), 200);
    assert_per_run_order(&inner.acked(), &sent);
}

/// A sink that refuses with a `Retry-After` the first time, then accepts.
struct AskToWait {
    inner: MemorySink,
    asked: std::sync::atomic::AtomicBool,
}

impl Sink for AskToWait {
    fn name(&self) -> &str {
        "ask-to-wait"
    }
    fn publish<'a>(&'a self, event: &'a Event) -> sink_core::Accepting<'a> {
        if !self.asked.swap(true, Ordering::SeqCst) {
            let err = SinkError::transient("ask-to-wait", "HTTP 429")
                .with_retry_after(Duration::from_secs(30));
            return Box::pin(std::future::ready(Err(err)));
        }
        self.inner.publish(event)
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_its_cap() {
    for (cap, want) in [(Duration::from_secs(300), 30), (Duration::from_secs(5), 5)] {
        let inner = MemorySink::new("inner");
        let sink = Arc::new(AskToWait {
            inner: inner.clone(),
            asked: Default::default(),
        });
        let policy = RetryPolicy {
            retry_after_max: cap,
            ..retry()
        };
        let mut delivery = Delivery::start(
            vec![Route {
                name: "ask".into(),
                sink,
                filter: Filter::default(),
                format: Default::default(),
            }],
            None,
            &LaneConfig::default(),
            &policy,
        );
        let t0 = Instant::now();
        delivery.send(event(1, 1, "run.started")).await;
        delivery.finish(std::future::pending()).await;
        let waited = t0.elapsed().as_secs_f64();
        assert!(
            waited >= want as f64 && waited < want as f64 + 0.2,
            "waited {waited} s, wanted {want} s"
        );
        assert_eq!(inner.acked().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_sink_does_not_delay_a_healthy_one() {
    let dead = MemorySink::new("dead");
    dead.set_down(true);
    let healthy = MemorySink::new("healthy");
    healthy.set_ack_delay(Duration::from_millis(2));
    let sent = interleaved(50, 20);
    let mut delivery = Delivery::start(
        vec![route(&dead), route(&healthy)],
        None,
        &LaneConfig::default(),
        &retry(),
    );
    let t0 = Instant::now();
    for e in sent.clone() {
        delivery.send(e).await;
    }
    while healthy.acked().len() < sent.len() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "healthy lane took {:?} while the other was down",
        t0.elapsed()
    );
    assert!(dead.acked().is_empty());
    dead.set_down(false);
    delivery.finish(std::future::pending()).await;
    assert_per_run_order(&dead.acked(), &sent);
    assert_per_run_order(&healthy.acked(), &sent);
}

#[tokio::test(start_paused = true)]
async fn a_full_lane_pauses_intake() {
    let dead = MemorySink::new("dead");
    dead.set_down(true);
    let lanes = LaneConfig {
        capacity: 10,
        window: 4,
    };
    let mut delivery = Delivery::start(vec![route(&dead)], None, &lanes, &retry());
    for e in interleaved(10, 1) {
        delivery.send(e).await;
    }
    let eleventh = tokio::time::timeout(
        Duration::from_secs(30),
        delivery.send(event(99, 0, "run.started")),
    )
    .await;
    assert!(eleventh.is_err(), "intake must wait while the lane is full");
    dead.set_down(false);
    delivery.send(event(99, 1, "run.started")).await;
    delivery.finish(std::future::pending()).await;
    assert_eq!(dead.acked().len(), 11);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_dead_lettered_with_the_reason() {
    let sink = MemorySink::new("picky");
    sink.script([Script::Ack, Script::RejectPermanent, Script::NackPermanent]);
    let dlq = MemorySink::new("dlq");
    let sent = interleaved(1, 5);
    let mut delivery = Delivery::start(
        vec![route(&sink)],
        Some(Arc::new(dlq.clone())),
        &LaneConfig::default(),
        &retry(),
    );
    let stats = delivery.stats();
    for e in sent.clone() {
        delivery.send(e).await;
    }
    delivery.finish(std::future::pending()).await;
    let dead = dlq.acked();
    assert_eq!(
        dead.iter().map(|e| e.id()).collect::<Vec<_>>(),
        ["r0-e1", "r0-e2"]
    );
    for e in &dead {
        let reason = e.extension(DEAD_LETTER_REASON).expect("reason").to_string();
        assert!(reason.contains("permanent failure at picky"), "{reason}");
        assert_eq!(
            e.extension(DEAD_LETTER_SINK).map(|v| v.to_string()),
            Some("picky".into())
        );
    }
    assert_eq!(sink.acked().len(), 3, "the rest of the run kept flowing");
    let lane = &stats[0].1;
    assert_eq!(lane.failed.load(Ordering::Relaxed), 2);
    assert_eq!(lane.dead_lettered.load(Ordering::Relaxed), 2);
    assert_eq!(lane.undeliverable.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_dead_letter_sink_failures_are_counted_as_undeliverable() {
    let sink = MemorySink::new("picky");
    sink.script([Script::RejectPermanent]);
    let mut delivery = Delivery::start(vec![route(&sink)], None, &LaneConfig::default(), &retry());
    let stats = delivery.stats();
    delivery.send(event(1, 0, "run.failed")).await;
    delivery.send(event(1, 1, "run.failed")).await;
    delivery.finish(std::future::pending()).await;
    assert_eq!(stats[0].1.undeliverable.load(Ordering::Relaxed), 1);
    assert_eq!(sink.acked().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_limit_turns_transient_failures_into_dead_letters() {
    let sink = MemorySink::new("flaky");
    sink.set_down(true);
    let dlq = MemorySink::new("dlq");
    let policy = RetryPolicy {
        max_attempts: 3,
        ..retry()
    };
    let mut delivery = Delivery::start(
        vec![route(&sink)],
        Some(Arc::new(dlq.clone())),
        &LaneConfig::default(),
        &policy,
    );
    delivery.send(event(1, 0, "run.failed")).await;
    delivery.finish(std::future::pending()).await;
    let dead = dlq.acked();
    assert_eq!(dead.len(), 1);
    let reason = dead[0]
        .extension(DEAD_LETTER_REASON)
        .expect("reason")
        .to_string();
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn filters_choose_the_lanes() {
    let failures = MemorySink::new("failures");
    let team_a = MemorySink::new("team-a");
    let mut delivery = Delivery::start(
        vec![
            Route {
                name: "failures".into(),
                sink: Arc::new(failures.clone()),
                filter: Filter {
                    types: vec!["*.failed".into()],
                    ..Filter::default()
                },
                format: Default::default(),
            },
            Route {
                name: "team-a".into(),
                sink: Arc::new(team_a.clone()),
                filter: Filter {
                    namespaces: vec!["team-a".into()],
                    ..Filter::default()
                },
                format: Default::default(),
            },
        ],
        None,
        &LaneConfig::default(),
        &retry(),
    );
    delivery.send(event(1, 0, "task.failed")).await; // team-b
    delivery.send(event(2, 0, "run.succeeded")).await; // team-a
    delivery.send(event(3, 0, "run.started")).await; // team-b: nobody
    assert_eq!(delivery.unrouted(), 1);
    delivery.finish(std::future::pending()).await;
    assert_eq!(failures.acked().len(), 1);
    assert_eq!(team_a.acked().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn giving_up_reports_what_was_pending() {
    let dead = MemorySink::new("dead");
    dead.set_down(true);
    let mut delivery = Delivery::start(vec![route(&dead)], None, &LaneConfig::default(), &retry());
    for e in interleaved(3, 2) {
        delivery.send(e).await;
    }
    let unfinished = delivery
        .finish(tokio::time::sleep(Duration::from_secs(10)))
        .await;
    assert_eq!(unfinished.pending, [("dead".to_owned(), 6)]);
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_keeps_up_receives_events_in_arrival_order() {
    // Runs of different lengths, interleaved unevenly: whatever the lane's bookkeeping, a sink
    // that never pushes back must see exactly the arrival order (deterministic files and stdout).
    let mut sent = Vec::new();
    for n in 0..40 {
        for run in 0..(1 + n % 7) {
            sent.push(event(run, n, "task.started"));
        }
    }
    for order in [KeyOrder::Pipelined, KeyOrder::OneInFlight] {
        let sink = MemorySink::new("keeps-up").with_key_order(order);
        let mut delivery =
            Delivery::start(vec![route(&sink)], None, &LaneConfig::default(), &retry());
        for e in sent.clone() {
            delivery.send(e).await;
        }
        delivery.finish(std::future::pending()).await;
        let ids: Vec<String> = sink.acked().iter().map(|e| e.id().to_owned()).collect();
        let want: Vec<String> = sent.iter().map(|e| e.id().to_owned()).collect();
        if order == KeyOrder::Pipelined {
            assert_eq!(ids, want, "arrival order");
        } else {
            assert_per_run_order(&sink.acked(), &sent);
        }
    }
}

/// The checkpoint's contract: a token comes out once every sink the event was routed to has
/// acknowledged or dead-lettered it, and never for an event that is still pending or was lost.
#[tokio::test(start_paused = true)]
async fn a_tracked_event_is_done_when_every_routed_sink_finished_with_it() {
    let fast = MemorySink::new("fast");
    let slow = MemorySink::new("slow");
    slow.set_ack_delay(Duration::from_secs(10));
    let picky = MemorySink::new("picky");
    picky.script([Script::RejectPermanent]);
    let only_a = Route {
        filter: Filter {
            namespaces: vec!["team-a".into()],
            ..Filter::default()
        },
        ..route(&picky)
    };
    let dlq = MemorySink::new("dlq");
    let mut delivery = Delivery::start(
        vec![route(&fast), route(&slow), only_a],
        Some(Arc::new(dlq.clone())),
        &LaneConfig::default(),
        &retry(),
    );
    let (tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    // run 0 is team-a: fast, slow and picky (dead-lettered); run 1 is team-b: fast and slow.
    delivery
        .send_tracked(event(0, 0, "run.started"), 10, &tx)
        .await;
    delivery
        .send_tracked(event(1, 0, "run.started"), 11, &tx)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        done.try_recv().is_err(),
        "the slow sink has acknowledged nothing yet"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut tokens = vec![
        done.recv().await.expect("token"),
        done.recv().await.expect("token"),
    ];
    tokens.sort_unstable();
    assert_eq!(tokens, [10, 11]);
    assert_eq!(
        dlq.acked().len(),
        1,
        "picky's refusal was dead-lettered, which counts as done"
    );

    // Lost without a dead-letter sink, or still pending at shutdown: never done.
    let refusing = MemorySink::new("refusing");
    refusing.script([Script::RejectPermanent]);
    let down = MemorySink::new("down");
    down.set_down(true);
    let mut delivery = Delivery::start(
        vec![route(&refusing)],
        None,
        &LaneConfig::default(),
        &retry(),
    );
    delivery
        .send_tracked(event(2, 0, "run.started"), 20, &tx)
        .await;
    delivery.finish(std::future::pending()).await;
    let mut delivery = Delivery::start(vec![route(&down)], None, &LaneConfig::default(), &retry());
    delivery
        .send_tracked(event(3, 0, "run.started"), 30, &tx)
        .await;
    delivery
        .finish(tokio::time::sleep(Duration::from_secs(30)))
        .await;
    assert!(done.try_recv().is_err());
}
