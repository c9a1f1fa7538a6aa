//! kfp-event-bridge turns Kubeflow Pipelines runs — Argo Workflows — into CloudEvents v1.0 and
//! publishes them to message buses.
//!
//! # Layout
//!
//! The flow is `source → derive → encode → pipeline → sinks`:
//!
//! - [`source`]: the Kubernetes object shapes read ([`source::objects`]), the recording format
//!   ([`source::recording`]) and `replay` ([`source::replay`]).
//! - [`derive`]: Workflow status (and Kubernetes Events) → [`model::Fact`]s: tasks in the node
//!   tree, attempts, KEP-12843 lifecycle warnings, de-duplication, causal order. Pure.
//! - [`encode`]: facts → CloudEvents with deterministic ids and the KFP payload. Pure.
//! - [`route`]: which events go to which sink (filters, the config file, subscribers, `K_SINK`).
//! - [`delivery`]: one lane per sink — bounded queue, in-flight window, retries with backoff,
//!   dead letter, per-run order.
//! - [`sinks`]: sink URIs → sinks; the trait and the stdout/file sinks live in `sinks/core`, each
//!   transport in its own crate under `sinks/`.
//! - [`cli`], [`app`], [`telemetry`]: the command line, the commands, logging.

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
