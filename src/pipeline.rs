//! Delivery of encoded events to the chosen sinks, preserving order and waiting for every
//! acknowledgement. This first version stops at the first failure; per-sink lanes, retries and the
//! dead-letter sink build on it.

use sink_core::{Receipt, Sink, SinkError};
use std::collections::VecDeque;
use std::sync::Arc;

/// Receipts awaited at most this far behind the newest publish.
pub const DEFAULT_WINDOW: usize = 4096;

/// Publishes each event to every sink, in order, keeping a bounded number unacknowledged.
pub struct Delivery {
    sinks: Vec<Arc<dyn Sink>>,
    in_flight: VecDeque<Receipt>,
    window: usize,
    delivered: u64,
}

impl Delivery {
    pub fn new(sinks: Vec<Arc<dyn Sink>>, window: usize) -> Self {
        Self {
            sinks,
            in_flight: VecDeque::new(),
            window: window.max(1),
            delivered: 0,
        }
    }

    /// Event-sink pairs acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    pub async fn send(&mut self, event: &cloudevents::Event) -> Result<(), SinkError> {
        for sink in &self.sinks {
            let receipt = sink.publish(event).await?;
            self.in_flight.push_back(receipt);
        }
        while self.in_flight.len() > self.window {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for every outstanding acknowledgement, then flushes every sink.
    pub async fn finish(&mut self) -> Result<(), SinkError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        for sink in &self.sinks {
            sink.flush().await?.await?;
        }
        Ok(())
    }

    async fn settle_oldest(&mut self) -> Result<(), SinkError> {
        if let Some(receipt) = self.in_flight.pop_front() {
            receipt.await?;
            self.delivered += 1;
        }
        Ok(())
    }
}
