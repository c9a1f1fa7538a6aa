//! The live bridge against the fake Kubernetes API: watches, checkpoint, kill -9, 410s,
//! failover, retried runs; the admin endpoints and metrics; the RBAC the manifests grant.

#[path = "../support/mod.rs"]
mod support;

mod live;
mod observability;
mod rbac;
