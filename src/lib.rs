//! kfp-event-bridge turns Kubeflow Pipelines runs — Argo Workflows — into CloudEvents v1.0 and
//! publishes them to message buses.
//!
//! # Layout
//!
//! The flow is `source → derive → encode → pipeline → sinks`. The modules, from the top (what
//! the binary calls) down to what everything uses; each imports only modules below it:
//!
//! - [`commands`]: `run`, `record`, `replay`, `resend`, each a thin file over the pipeline, and
//!   what they share (errors and exit codes, the report, opening sinks, signals).
//! - [`admin`]: the admin server (`/healthz`, `/readyz`, `/metrics`), readiness, the scrape-time
//!   collector, the sinks' health checks.
//! - [`config`]: flag > file > default, and every check, before anything starts: which events go
//!   to which sink (`--sink` URIs, the config file, subscribers, `K_SINK`), lanes, retries,
//!   `run`'s timings.
//! - [`cli`]: the command line (clap only): every flag with its environment twin, parsed into
//!   typed values (durations, the admin address) at the boundary.
//! - [`pipeline`]: one [`pipeline::Stage`] (observation → facts → events) and one
//!   [`pipeline::Pipeline`] (the lanes, and tracked: the checkpoint progress); presence,
//!   progress, router, delivery, lane, retry and lane stats in files of their own.
//! - [`metrics`]: what the bridge pushes as it works — KFP run metrics and its own state.
//! - [`derive`]: Workflow status (and Kubernetes Events) → [`model::Fact`]s: tasks in the node
//!   tree, attempts, KEP-12843 lifecycle warnings, de-duplication, causal order. Pure.
//! - [`source`]: the Kubernetes object shapes read, the live watches, the recording format,
//!   input lines, `resend` input.
//! - [`checkpoint`]: which facts are done — spec, entry codec, shards, file and ConfigMap stores.
//! - [`encode`]: facts → CloudEvents with deterministic ids and the KFP payload, run links and
//!   trace context; [`encode::cdevents`]: those events as CDEvents, for the sinks that want them.
//!   Pure.
//! - [`model`]: facts, runs, tasks, attempts, lifecycle categories and failure kinds.
//! - [`leader`], [`sinks`], [`telemetry`]: Lease election, the registry of sink factories (each
//!   transport its own crate under `sinks/`, behind a cargo feature), logging.

pub mod admin;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod derive;
pub mod encode;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod sinks;
pub mod source;
pub mod telemetry;
