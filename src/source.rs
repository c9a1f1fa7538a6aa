//! Inputs: the Kubernetes object shapes the bridge reads and the recordings `replay` feeds through
//! the same derivation as the live watches, and files of CloudEvents `resend` publishes again.

pub mod live;
pub mod objects;
pub mod recording;
pub mod replay;
pub mod resend;
