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
//! - [`pipeline`]: ordered delivery to the sinks, awaiting acknowledgements.
//! - [`sinks`]: sink URIs → sinks; the trait and the stdout/file sinks live in `sinks/core`.
//! - [`cli`], [`app`], [`telemetry`]: the command line, the commands, logging.

pub mod app;
pub mod cli;
pub mod derive;
pub mod encode;
pub mod model;
pub mod pipeline;
pub mod sinks;
pub mod source;
pub mod telemetry;
