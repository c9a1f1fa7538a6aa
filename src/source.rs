//! Inputs: the Kubernetes object shapes the bridge reads, the watches that read them live, the
//! recording format, input files read line by line, and files of CloudEvents `resend` publishes
//! again.

pub mod lines;
pub mod live;
pub mod objects;
pub mod recording;
pub mod resend;
