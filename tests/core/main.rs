//! The core, in process: golden files of every recording, invariants, catalog (docs = code),
//! garbage in (property tests), routing, the delivery engine in virtual time, and the command
//! line's exit codes.

#[path = "../support/mod.rs"]
mod support;

mod catalog;
mod cli;
mod delivery;
mod garbage;
mod golden;
mod invariants;
mod routing;
