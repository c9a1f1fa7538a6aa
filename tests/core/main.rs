//! The core, in process: golden files of every recording, invariants, catalog (docs = code),
//! garbage in (property tests), routing, the delivery engine in virtual time, the command line's
//! exit codes; and the Helm chart, rendered by the real helm.

#[path = "../support/mod.rs"]
mod support;

mod asyncapi;
mod catalog;
mod cdevents;
mod chart;
mod cli;
mod delivery;
mod garbage;
mod golden;
mod invariants;
mod links;
mod routing;
