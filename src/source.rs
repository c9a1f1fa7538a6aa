//! Inputs: the Kubernetes object shapes the bridge reads and the recordings `replay` feeds through
//! the same derivation as the live watches.

pub mod objects;
pub mod recording;
pub mod replay;
