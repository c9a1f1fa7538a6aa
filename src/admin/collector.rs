//! The scrape-time collector: the bridge's own metrics (`kfp_event_bridge_*`) read from the
//! state the command's parts push ([`Bridge`]) and from the lanes' counters when `/metrics` is
//! scraped, so the hot path never formats a metric.

use super::sinks::{SinkBoard, SinkState};
use crate::metrics::{Bridge, Labels, WatchState, lock};
use crate::model::FactKind;
use crate::pipeline::LaneStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads the bridge's state at scrape time.
#[derive(Debug)]
pub struct Collect(pub Arc<Bridge>, pub Arc<SinkBoard>);

/// Encodes one metric family with a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    members: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in members {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let facts: Vec<(Labels, ConstCounter<u64>)> = FactKind::ALL
            .iter()
            .map(|kind| {
                (
                    vec![("type", kind.type_suffix().to_owned())],
                    counter(load(&b.facts[*kind as usize])),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_facts",
            "Facts derived, by CloudEvent type suffix",
            MetricType::Counter,
            &facts,
        )?;
        let d = &b.derive;
        for (name, help, value) in [
            (
                "kfp_event_bridge_workflow_observations",
                "Workflow observations derived from (watch events or recording lines)",
                &d.observations,
            ),
            (
                "kfp_event_bridge_decode_errors",
                "Input that could not be decoded: bad recording lines, watched objects that cannot be read, undecodable compressedNodes",
                &d.bad_lines,
            ),
            (
                "kfp_event_bridge_kubernetes_events_used",
                "Kubernetes Events turned into facts because the status could not say",
                &d.events_used,
            ),
            (
                "kfp_event_bridge_kubernetes_events_merged",
                "Kubernetes Events whose fact the status gave too",
                &d.events_merged,
            ),
            (
                "kfp_event_bridge_kubernetes_events_unattributed",
                "workflow-controller Events whose workflow or node could not be identified",
                &d.events_unattributed,
            ),
            (
                "kfp_event_bridge_offloaded_workflows",
                "Workflows seen with their node status offloaded to Argo's database",
                &d.offloaded_workflows,
            ),
            (
                "kfp_event_bridge_history_skipped",
                "Observations of runs finished before the retention window or already done",
                &d.history_skipped,
            ),
            (
                "kfp_event_bridge_checkpoint_writes",
                "Checkpoint writes that succeeded",
                &b.checkpoint_writes,
            ),
            (
                "kfp_event_bridge_checkpoint_failures",
                "Checkpoint writes that failed (retried at the next flush)",
                &b.checkpoint_failures,
            ),
            (
                "kfp_event_bridge_checkpoint_waits",
                "Times publishing waited at the duplicate bound (--max-in-flight) for a checkpoint write to end",
                &b.checkpoint_waits,
            ),
        ] {
            let mut value = load(value);
            if name == "kfp_event_bridge_decode_errors" {
                value += load(&d.node_decode_errors);
            }
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(value).encode(metric)?;
        }
        let waited = load(&b.checkpoint_wait_micros) as f64 / 1e6;
        ConstCounter::new(waited).encode(encoder.encode_descriptor(
            "kfp_event_bridge_checkpoint_wait_seconds",
            "Time publishing waited at the duplicate bound for a checkpoint write to end",
            None,
            MetricType::Counter,
        )?)?;
        let role = b.role.load(Ordering::Relaxed);
        let roles: Vec<(Labels, ConstGauge<i64>)> = ["unknown", "standby", "leader", "single"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    vec![("role", (*name).to_owned())],
                    ConstGauge::new(i64::from(role == i as u8)),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_role",
            "1 for this replica's role: leader, standby, single (no leader election) or unknown",
            MetricType::Gauge,
            &roles,
        )?;
        ConstGauge::new(b.started.elapsed().as_secs_f64()).encode(encoder.encode_descriptor(
            "kfp_event_bridge_uptime_seconds",
            "Seconds since the process started",
            None,
            MetricType::Gauge,
        )?)?;

        let watches = lock(&b.watches);
        let labels = |w: &WatchState| -> Labels {
            vec![
                ("resource", w.resource.to_owned()),
                ("namespace", w.namespace.clone()),
            ]
        };
        let gauges = |f: &dyn Fn(&WatchState) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
            watches
                .iter()
                .map(|w| (labels(w), ConstGauge::new(f(w))))
                .collect()
        };
        let counters = |f: &dyn Fn(&WatchState) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
            watches.iter().map(|w| (labels(w), counter(f(w)))).collect()
        };
        family(
            &mut encoder,
            "kfp_event_bridge_watch_up",
            "1 when the watch has listed and its last attempt did not fail",
            MetricType::Gauge,
            &gauges(&|w| f64::from(u8::from(w.synced && w.failing().is_none()))),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_restarts",
            "Watch failures after which the watcher retried with backoff",
            MetricType::Counter,
            &counters(&|w| w.restarts),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_relists",
            "Full re-lists after the first list (410 Gone, desynchronisation)",
            MetricType::Counter,
            &counters(&|w| w.relists),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_watch_last_event_age_seconds",
            "Seconds since the watch last delivered an object or finished a list (-1: never)",
            MetricType::Gauge,
            &gauges(&|w| w.last_event.map_or(-1.0, |t| t.elapsed().as_secs_f64())),
        )?;
        drop(watches);

        let sinks = lock(&self.1.sinks);
        let sink_labels = |s: &SinkState| -> Labels { vec![("sink", s.name.clone())] };
        for (name, help, pick) in [
            (
                "kfp_event_bridge_events_routed",
                "Events routed to the sink's lane",
                &(|l: &LaneStats| l.routed.load(Ordering::Relaxed)) as &dyn Fn(&LaneStats) -> u64,
            ),
            (
                "kfp_event_bridge_events_published",
                "Events the sink acknowledged",
                &|l: &LaneStats| l.delivered.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_retried",
                "Publish attempts that failed transiently and were retried",
                &|l: &LaneStats| l.retried.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_failed",
                "Events the sink refused for good or that ran out of attempts",
                &|l: &LaneStats| l.failed.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_dead_lettered",
                "Failed events the dead-letter sink acknowledged",
                &|l: &LaneStats| l.dead_lettered.load(Ordering::Relaxed),
            ),
            (
                "kfp_event_bridge_events_undeliverable",
                "Failed events with no dead-letter sink, or refused by it: lost",
                &|l: &LaneStats| l.undeliverable.load(Ordering::Relaxed),
            ),
        ] {
            let members: Vec<(Labels, ConstCounter<u64>)> = sinks
                .iter()
                .map(|s| (sink_labels(s), counter(pick(&s.lane))))
                .collect();
            family(&mut encoder, name, help, MetricType::Counter, &members)?;
        }
        let gauge_members = |f: &dyn Fn(&SinkState) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
            sinks
                .iter()
                .map(|s| (sink_labels(s), ConstGauge::new(f(s))))
                .collect()
        };
        family(
            &mut encoder,
            "kfp_event_bridge_lane_depth",
            "Events queued or in flight in the sink's lane",
            MetricType::Gauge,
            &gauge_members(&|s| load(&s.lane.depth) as f64),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_oldest_pending_seconds",
            "Age of the oldest event queued or in flight in the sink's lane (0 when empty)",
            MetricType::Gauge,
            &gauge_members(&|s| s.lane.oldest_pending().map_or(0.0, |d| d.as_secs_f64())),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_sink_consecutive_failures",
            "Consecutive failed publish attempts (0 while the sink takes events)",
            MetricType::Gauge,
            &gauge_members(&|s| load(&s.lane.failures) as f64),
        )?;
        family(
            &mut encoder,
            "kfp_event_bridge_sink_up",
            "1 when the sink's last health check passed and publishing is not failing",
            MetricType::Gauge,
            &gauge_members(&|s| {
                f64::from(u8::from(
                    matches!(s.health, Some(Ok(()))) && s.lane.last_error().is_none(),
                ))
            }),
        )?;
        let dead_letter: Vec<(Labels, ConstGauge<f64>)> = lock(&self.1.dead_letter)
            .iter()
            .map(|(name, health)| {
                let up = matches!(health, Some(Ok(())));
                (
                    vec![("sink", name.clone())],
                    ConstGauge::new(f64::from(u8::from(up))),
                )
            })
            .collect();
        family(
            &mut encoder,
            "kfp_event_bridge_dead_letter_sink_up",
            "1 when the dead-letter sink's last health check passed",
            MetricType::Gauge,
            &dead_letter,
        )?;
        let mut metric = encoder.encode_descriptor(
            "kfp_event_bridge_publish_latency_seconds",
            "Publish-to-acknowledgement latency of delivered events",
            None,
            MetricType::Histogram,
        )?;
        for s in sinks.iter() {
            let h = s.lane.latency_histogram();
            let labels = sink_labels(s);
            metric
                .encode_family(&labels)?
                .encode_histogram::<Labels>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}
