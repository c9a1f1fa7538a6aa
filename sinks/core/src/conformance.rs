//! The conformance kit: what every sink must do, checked against its real far side. A sink
//! crate's tests (or the bridge's, where the real servers run) call [`check`] with the factory,
//! a URI of a running server, and an [`Inbox`] that reads back what arrived there.
//!
//! Checked: the factory's schemes are well-formed and open the URI; an unknown option is a
//! [`SinkError::Config`]; the sink's name shows no credentials; a health check answers; events
//! of two runs published as the pipeline publishes them (several in flight per run for
//! [`KeyOrder::Pipelined`] sinks, one for the others) are all acknowledged, arrive once each,
//! and in publish order per run; `flush` resolves; and, given a URI of a server that is not
//! there, opening or publishing fails in bounded time instead of hanging.

use crate::{Event, KeyOrder, Receipt, Sink, SinkConfig, SinkError, SinkFactory};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Reads back, from the real far side, the ids of the CloudEvents that arrived, in arrival order.
pub trait Inbox: Send + Sync {
    /// Waits until `want` events arrived (or `within` passed) and returns the ids seen.
    fn received(
        &self,
        want: usize,
        within: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>>;
}

/// Runs per check.
const RUNS: usize = 2;
const PER_RUN: usize = 5;
/// How long a step may take against a real server on a loaded machine.
const STEP: Duration = Duration::from_secs(30);

/// The events the kit publishes: `RUNS` runs of `PER_RUN`, interleaved, with the extensions
/// templates read (`namespace`, `pipeline`, `workflow`, `kfprunid`, `partitionkey`).
pub fn events(tag: &str) -> Vec<Event> {
    let mut out = Vec::new();
    for seq in 0..PER_RUN {
        for run in 0..RUNS {
            let run_id = format!("conformance-{tag}-run-{run}");
            let event = EventBuilderV10::new()
                .id(format!("conformance-{tag}-{run}-{seq}"))
                .source(format!(
                    "https://kubernetes.default.svc/apis/argoproj.io/v1alpha1/namespaces/conformance/workflows/wf-{run}"
                ))
                .ty("org.kubeflow.pipelines.task.started")
                .subject(format!("conformance/wf-{run}/task-{seq}"))
                .extension("namespace", "conformance")
                .extension("pipeline", "conformance")
                .extension("workflow", format!("wf-{run}"))
                .extension("kfprunid", run_id.clone())
                .extension("partitionkey", run_id)
                .data(
                    "application/json",
                    serde_json::json!({"Run": run, "Seq": seq, "Message": "conformance"}),
                )
                .build()
                .expect("a valid event");
            out.push(event);
        }
    }
    out
}

/// A failed check.
#[derive(Debug, thiserror::Error)]
#[error("conformance: {0}")]
pub struct Failure(String);

fn fail(message: impl Into<String>) -> Failure {
    Failure(message.into())
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, Failure> {
    tokio::time::timeout(STEP, future)
        .await
        .map_err(|_| fail(format!("{what}: no answer within {STEP:?}")))
}

/// Checks `factory` against the real server `uri` points at, reading what arrived with `inbox`.
/// `tag` keeps the ids of one call apart from another's on a shared server.
pub async fn check(
    factory: &dyn SinkFactory,
    uri: &str,
    inbox: &dyn Inbox,
    tag: &str,
) -> Result<(), Failure> {
    let schemes = factory.schemes();
    if schemes.is_empty() {
        return Err(fail("the factory names no scheme"));
    }
    for scheme in schemes {
        if scheme.is_empty() || scheme.contains([':', '/']) || scheme.to_lowercase() != *scheme {
            return Err(fail(format!(
                "scheme {scheme:?}: lowercase, without ':' or '/'"
            )));
        }
    }
    if !schemes.contains(&crate::scheme(uri)) {
        return Err(fail(format!(
            "{uri:?} is not one of the schemes {schemes:?}"
        )));
    }
    let config = SinkConfig {
        uri,
        name: None,
        options: None,
    };

    // An option the sink does not know is a configuration error, said before anything is sent.
    let unknown = [("kfp_conformance_unknown".to_owned(), "1".to_owned())];
    let with_unknown = SinkConfig {
        options: Some(&unknown),
        ..config
    };
    match within("open with an unknown option", factory.open(with_unknown)).await? {
        Err(SinkError::Config { .. }) => {}
        Err(other) => {
            return Err(fail(format!(
                "unknown option: want a Config error, got {other}"
            )));
        }
        Ok(_) => return Err(fail("an unknown option was accepted")),
    }

    let sink = within("open", factory.open(config))
        .await?
        .map_err(|e| fail(format!("open: {e}")))?;
    if let Some(secret) = password(uri)
        && sink.name().contains(secret)
    {
        return Err(fail(format!(
            "the sink's name {:?} shows the password",
            sink.name()
        )));
    }
    within("health", sink.health())
        .await?
        .map_err(|e| fail(format!("health: {e}")))?;

    let events = events(tag);
    publish_all(&sink, &events).await?;
    within("flush", async {
        match sink.flush().await {
            Ok(receipt) => receipt.await,
            Err(e) => Err(e),
        }
    })
    .await?
    .map_err(|e| fail(format!("flush: {e}")))?;

    let ids = inbox.received(events.len(), STEP).await;
    let want: Vec<String> = events.iter().map(|e| e.id().to_owned()).collect();
    for id in &want {
        let n = ids.iter().filter(|i| *i == id).count();
        if n != 1 {
            return Err(fail(format!("{id} arrived {n} times; arrived: {ids:?}")));
        }
    }
    for run in 0..RUNS {
        let order: Vec<&String> = ids
            .iter()
            .filter(|id| id.starts_with(&format!("conformance-{tag}-{run}-")))
            .collect();
        let sent: Vec<&String> = want
            .iter()
            .filter(|id| id.starts_with(&format!("conformance-{tag}-{run}-")))
            .collect();
        if order != sent {
            return Err(fail(format!(
                "run {run} arrived as {order:?}, sent {sent:?}"
            )));
        }
    }
    Ok(())
}

/// Publishes as the pipeline does: per run in order; several in flight per run only for a
/// pipelined sink.
async fn publish_all(sink: &Arc<dyn Sink>, events: &[Event]) -> Result<(), Failure> {
    let pipelined = sink.key_order() == KeyOrder::Pipelined;
    let mut receipts: Vec<(String, Receipt)> = Vec::new();
    for event in events {
        let receipt = within("publish", sink.publish(event))
            .await?
            .map_err(|e| fail(format!("publish {}: {e}", event.id())))?;
        if pipelined {
            receipts.push((event.id().to_owned(), receipt));
        } else {
            within("acknowledgement", receipt)
                .await?
                .map_err(|e| fail(format!("acknowledgement of {}: {e}", event.id())))?;
        }
    }
    for (id, receipt) in receipts {
        within("acknowledgement", receipt)
            .await?
            .map_err(|e| fail(format!("acknowledgement of {id}: {e}")))?;
    }
    Ok(())
}

/// Checks that with nothing listening at `uri`, opening the sink or publishing through it
/// fails (as a transient or configuration error) within bounded time, never hangs.
pub async fn check_unreachable(factory: &dyn SinkFactory, uri: &str) -> Result<(), Failure> {
    let config = SinkConfig {
        uri,
        name: None,
        options: None,
    };
    let sink = match within("open (unreachable)", factory.open(config)).await? {
        Err(_) => return Ok(()),
        Ok(sink) => sink,
    };
    let event = &events("unreachable")[0];
    let outcome = within("publish (unreachable)", async {
        match sink.publish(event).await {
            Ok(receipt) => receipt.await,
            Err(e) => Err(e),
        }
    })
    .await?;
    match outcome {
        Ok(()) => Err(fail(
            "an event to a server that is not there was acknowledged",
        )),
        Err(_) => Ok(()),
    }
}

/// The password of a URI's user-info, if any.
fn password(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user_info = &authority[..authority.rfind('@')?];
    user_info
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemorySink, Opening};
    use std::sync::Mutex;

    /// The in-memory sink as a plugin: what it accepted is what arrived.
    struct MemoryFactory(Arc<MemorySink>);

    impl SinkFactory for MemoryFactory {
        fn schemes(&self) -> &'static [&'static str] {
            &["memory"]
        }
        fn open<'a>(&'a self, config: SinkConfig<'a>) -> Opening<'a> {
            Box::pin(async move {
                if let Some((key, _)) = config.options.and_then(|o| o.first()) {
                    return Err(SinkError::config("memory", format!("unknown option {key}")));
                }
                Ok(Arc::clone(&self.0) as Arc<dyn Sink>)
            })
        }
    }

    struct MemoryInbox(Arc<MemorySink>, Mutex<()>);

    impl Inbox for MemoryInbox {
        fn received(
            &self,
            _want: usize,
            _within: Duration,
        ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
            let _guard = self.1.lock();
            let ids = self.0.acked().iter().map(|e| e.id().to_owned()).collect();
            Box::pin(async move { ids })
        }
    }

    #[tokio::test]
    async fn the_memory_sink_passes_the_kit() {
        let sink = Arc::new(MemorySink::new("memory"));
        let factory = MemoryFactory(Arc::clone(&sink));
        let inbox = MemoryInbox(Arc::clone(&sink), Mutex::new(()));
        check(&factory, "memory://u:hunter2@local", &inbox, "t")
            .await
            .expect("conforms");
    }

    /// An inbox that loses or reorders what arrived.
    struct Garbled(Arc<MemorySink>, fn(&mut Vec<String>));

    impl Inbox for Garbled {
        fn received(
            &self,
            _want: usize,
            _within: Duration,
        ) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
            let mut ids: Vec<String> = self.0.acked().iter().map(|e| e.id().to_owned()).collect();
            (self.1)(&mut ids);
            Box::pin(async move { ids })
        }
    }

    #[tokio::test]
    async fn lost_repeated_or_reordered_events_and_shown_passwords_fail_the_kit() {
        let garblings: [fn(&mut Vec<String>); 3] = [
            |ids| {
                ids.pop();
            },
            |ids| ids.push(ids[0].clone()),
            |ids| ids.swap(0, 2),
        ];
        for garble in garblings {
            let sink = Arc::new(MemorySink::new("memory"));
            let factory = MemoryFactory(Arc::clone(&sink));
            let inbox = Garbled(Arc::clone(&sink), garble);
            assert!(
                check(&factory, "memory://local", &inbox, "g")
                    .await
                    .is_err()
            );
        }
        // A name that shows the URI's password.
        let sink = Arc::new(MemorySink::new("memory://u:hunter2@local"));
        let factory = MemoryFactory(Arc::clone(&sink));
        let inbox = MemoryInbox(Arc::clone(&sink), Mutex::new(()));
        let err = check(&factory, "memory://u:hunter2@local", &inbox, "p").await;
        assert!(err.expect_err("password").to_string().contains("password"));
    }

    #[test]
    fn passwords_are_found_in_user_info_only() {
        assert_eq!(password("amqp://u:p@h/x"), Some("p"));
        assert_eq!(password("amqp://u@h/x"), None);
        assert_eq!(password("http://h/x?a=b@c"), None);
    }
}
