//! Delivery: fans events out to the lanes whose filter selects them, one lane per sink.
//!
//! Intake ([`Delivery::send`]) routes each event to the lanes whose filter matches and waits for
//! room in each (back-pressure: intake pauses instead of memory growing). A lane never waits for
//! another lane ([`super::lane`]).

use super::lane::{Completion, Item, Lane, LaneConfig};
use super::retry::RetryPolicy;
use super::router::{Filter, Route};
use super::stats::LaneStats;
use crate::encode::cdevents::{self, Format};
use cloudevents::Event;
use cloudevents::event::ExtensionValue;
use sink_core::Sink;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument as _;

struct LaneHandle {
    name: String,
    filter: Filter,
    format: Format,
    room: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Item>,
    stats: Arc<LaneStats>,
    task: tokio::task::JoinHandle<()>,
    sink: Arc<dyn Sink>,
}

/// What is left undelivered when [`Delivery::finish`] gave up waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Per sink name: events still queued or in flight.
    pub pending: Vec<(String, u64)>,
}

/// Fans events out to the sinks' lanes.
pub struct Delivery {
    lanes: Vec<LaneHandle>,
    dead_letter: Option<Arc<dyn Sink>>,
    seq: u64,
    unrouted: u64,
}

impl Delivery {
    /// Starts one lane per route on the current tokio runtime.
    pub fn start(
        routes: Vec<Route>,
        dead_letter: Option<Arc<dyn Sink>>,
        lanes: &LaneConfig,
        retry: &RetryPolicy,
    ) -> Self {
        let lanes = routes
            .into_iter()
            .map(|route| {
                let (tx, rx) = mpsc::unbounded_channel();
                let stats = Arc::new(LaneStats::default());
                let lane = Lane::new(
                    Arc::clone(&route.sink),
                    dead_letter.clone(),
                    lanes.window,
                    retry.clone(),
                    Arc::clone(&stats),
                );
                // What the lane logs names its sink.
                let span = tracing::info_span!("lane", sink = %route.name);
                LaneHandle {
                    name: route.name,
                    filter: route.filter,
                    format: route.format,
                    room: Arc::new(Semaphore::new(lanes.capacity.max(1))),
                    tx,
                    stats,
                    task: tokio::spawn(lane.run(rx).instrument(span)),
                    sink: route.sink,
                }
            })
            .collect();
        Self {
            lanes,
            dead_letter,
            seq: 0,
            unrouted: 0,
        }
    }

    /// Each lane's name and counters.
    pub fn stats(&self) -> Vec<(String, Arc<LaneStats>)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.stats)))
            .collect()
    }

    /// Each lane's name and sink.
    pub fn sinks(&self) -> Vec<(String, Arc<dyn Sink>)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), Arc::clone(&l.sink)))
            .collect()
    }

    /// The dead-letter sink, if one is configured.
    pub fn dead_letter(&self) -> Option<Arc<dyn Sink>> {
        self.dead_letter.clone()
    }

    /// Events no sink's filter selected.
    pub fn unrouted(&self) -> u64 {
        self.unrouted
    }

    /// Hands `event` to every lane whose filter selects it, waiting while a lane is full.
    pub async fn send(&mut self, event: Event) {
        self.send_inner(event, None).await;
    }

    /// As [`send`](Self::send), and once every lane it was routed to has delivered or
    /// dead-lettered it, `token` comes out of `done` — at once when no filter selects it. Events
    /// a lane gives up on without a dead-letter sink, or still holds at shutdown, never do.
    pub async fn send_tracked(
        &mut self,
        event: Event,
        token: u64,
        done: &mpsc::UnboundedSender<u64>,
    ) {
        let lanes = self
            .lanes
            .iter()
            .filter(|l| l.filter.matches(&event))
            .count();
        if lanes == 0 {
            let _ = done.send(token);
        }
        let completion = Arc::new(Completion {
            remaining: AtomicUsize::new(lanes),
            token,
            tx: done.clone(),
        });
        self.send_inner(event, Some(completion)).await;
    }

    async fn send_inner(&mut self, event: Event, done: Option<Arc<Completion>>) {
        let event = Arc::new(event);
        let key: Arc<str> = match event.extension("partitionkey") {
            Some(ExtensionValue::String(key)) => Arc::from(key.as_str()),
            _ => Arc::from(""),
        };
        self.seq += 1;
        let mut routed = false;
        // Made once for every lane that wants CDEvents; filters select on the bridge's event.
        let mut cdevent: Option<Result<Arc<Event>, cdevents::Undatable>> = None;
        for lane in &self.lanes {
            if !lane.filter.matches(&event) {
                continue;
            }
            routed = true;
            let event = match lane.format {
                Format::CloudEvents => Arc::clone(&event),
                Format::CdEvents => {
                    let converted = cdevent.get_or_insert_with(|| {
                        match cdevents::from_event(&event) {
                            Ok(Some(converted)) => Ok(Arc::new(converted)),
                            // Not one of the bridge's run or task events (a resend of another
                            // event, or of a CDEvent): it goes out as it is.
                            Ok(None) => Ok(Arc::clone(&event)),
                            Err(e) => Err(e),
                        }
                    });
                    match converted {
                        Ok(converted) => Arc::clone(converted),
                        Err(cdevents::Undatable) => {
                            // Not sent, not retried: said, counted, and done for this lane.
                            tracing::warn!(
                                sink = %lane.name,
                                id = %cloudevents::AttributesReader::id(event.as_ref()),
                                "event not sent as a CDEvent: nothing dates it (a run known \
                                 only from its Kubernetes Events, its start never seen)"
                            );
                            lane.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                            if let Some(done) = &done {
                                done.lane_done();
                            }
                            continue;
                        }
                    }
                }
            };
            let Ok(permit) = Arc::clone(&lane.room).acquire_owned().await else {
                continue;
            };
            lane.stats.routed(self.seq);
            let item = Item {
                event,
                key: Arc::clone(&key),
                seq: self.seq,
                attempts: 0,
                done: done.clone(),
                _permit: permit,
            };
            if lane.tx.send(item).is_err() {
                tracing::error!(sink = %lane.name, "lane stopped; event not queued");
            }
        }
        if !routed {
            self.unrouted += 1;
        }
    }

    /// Stops intake and waits until every lane has delivered (or dead-lettered) what it holds, or
    /// until `give_up` resolves; then flushes the sinks. Returns what was still pending.
    pub async fn finish(self, give_up: impl Future<Output = ()>) -> Unfinished {
        let Delivery {
            lanes, dead_letter, ..
        } = self;
        let mut tasks = Vec::with_capacity(lanes.len());
        let mut kept = Vec::with_capacity(lanes.len());
        for lane in lanes {
            drop(lane.tx);
            tasks.push(lane.task);
            kept.push((lane.name, lane.stats, lane.sink));
        }
        let all = futures_util::future::join_all(tasks.iter_mut());
        let timed_out = tokio::select! {
            _ = all => false,
            () = give_up => true,
        };
        let mut unfinished = Unfinished::default();
        for ((name, stats, sink), task) in kept.into_iter().zip(tasks) {
            if timed_out && !task.is_finished() {
                task.abort();
                unfinished
                    .pending
                    .push((name, stats.depth.load(Ordering::Relaxed)));
                continue;
            }
            flush(&*sink).await;
        }
        if let Some(sink) = dead_letter {
            flush(&*sink).await;
        }
        unfinished
    }
}

async fn flush(sink: &dyn Sink) {
    let result = match sink.flush().await {
        Ok(receipt) => receipt.await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::error!(sink = sink.name(), error = %err, "flush failed");
    }
}
