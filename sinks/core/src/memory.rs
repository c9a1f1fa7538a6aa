//! An in-memory sink whose answers a test scripts in advance: accept or reject, then acknowledge
//! or fail, message by message. It records what it accepted and what it acknowledged.

use crate::{Accepting, Event, KeyOrder, Receipt, Sink, SinkError, settled};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What the sink does with one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Accept, then acknowledge.
    Ack,
    /// Refuse at acceptance with a transient error.
    RejectTransient,
    /// Refuse at acceptance with a permanent error.
    RejectPermanent,
    /// Accept, then fail the acknowledgement with a transient error.
    NackTransient,
    /// Accept, then fail the acknowledgement with a permanent error.
    NackPermanent,
}

#[derive(Default)]
struct State {
    script: VecDeque<Script>,
    accepted: Vec<Event>,
    acked: Vec<Event>,
    down: bool,
    ack_delay: Duration,
}

/// A scriptable sink for tests; cloning shares the same state.
#[derive(Clone)]
pub struct MemorySink {
    name: String,
    order: KeyOrder,
    state: Arc<Mutex<State>>,
}

impl MemorySink {
    /// A sink with ordered, pipelined acknowledgements.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            order: KeyOrder::Pipelined,
            state: Arc::default(),
        }
    }

    /// Declares the given ordering guarantee to the pipeline.
    pub fn with_key_order(mut self, order: KeyOrder) -> Self {
        self.order = order;
        self
    }

    /// While down, every publish is refused with a transient error (a broker that is unreachable).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Acknowledgements arrive this long after acceptance (tokio time, so virtual in tests).
    pub fn set_ack_delay(&self, delay: Duration) {
        self.lock().ack_delay = delay;
    }

    /// Queues answers for the next messages; once they are used up every message is acknowledged.
    pub fn script(&self, answers: impl IntoIterator<Item = Script>) {
        self.lock().script.extend(answers);
    }

    /// Every message the sink accepted, in order (including those whose acknowledgement failed).
    pub fn accepted(&self) -> Vec<Event> {
        self.lock().accepted.clone()
    }

    /// Every message the sink acknowledged, in order.
    pub fn acked(&self) -> Vec<Event> {
        self.lock().acked.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the data is still what the test wants to see.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_order(&self) -> KeyOrder {
        self.order
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        let mut state = self.lock();
        if state.down {
            let err = SinkError::transient(&self.name, "sink is down");
            return Box::pin(std::future::ready(Err(err)));
        }
        let answer = state.script.pop_front().unwrap_or(Script::Ack);
        let result = match answer {
            Script::RejectTransient => Err(SinkError::transient(&self.name, "scripted rejection")),
            Script::RejectPermanent => Err(SinkError::permanent(&self.name, "scripted rejection")),
            Script::Ack if !state.ack_delay.is_zero() => {
                state.accepted.push(event.clone());
                let (delay, shared, event) = (state.ack_delay, self.clone(), event.clone());
                Ok(Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    shared.lock().acked.push(event);
                    Ok(())
                }) as Receipt)
            }
            Script::Ack => {
                state.accepted.push(event.clone());
                state.acked.push(event.clone());
                Ok(settled(Ok(())))
            }
            Script::NackTransient => {
                state.accepted.push(event.clone());
                Ok(settled(Err(SinkError::transient(
                    &self.name,
                    "scripted nack",
                ))))
            }
            Script::NackPermanent => {
                state.accepted.push(event.clone());
                Ok(settled(Err(SinkError::permanent(
                    &self.name,
                    "scripted nack",
                ))))
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[tokio::test]
    async fn follows_the_script_then_acks() {
        let sink = MemorySink::new("mem");
        sink.script([Script::RejectTransient, Script::NackPermanent]);
        let ev = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .build()
            .expect("event");
        assert!(
            sink.publish(&ev)
                .await
                .err()
                .expect("rejected")
                .is_transient()
        );
        let nack = sink.publish(&ev).await.expect("accepted").await;
        assert_eq!(nack.expect_err("nacked").class(), "permanent");
        sink.publish(&ev)
            .await
            .expect("accepted")
            .await
            .expect("acked");
        assert_eq!(sink.accepted().len(), 2);
        assert_eq!(sink.acked().len(), 1);
    }
}
