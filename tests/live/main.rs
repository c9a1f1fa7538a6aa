//! The live bridge against the fake Kubernetes API: watches, checkpoint, kill -9, 410s,
//! failover, retried runs; the admin endpoints and metrics; the RBAC the manifests grant; the Helm
//! chart's Deployment running.

#[path = "../support/mod.rs"]
mod support;

mod chart;
mod garbage;
mod image;
mod live;
mod observability;
mod rbac;
mod secrets;
