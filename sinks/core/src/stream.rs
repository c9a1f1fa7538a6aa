//! The sink that writes structured CloudEvents as JSON lines to standard output or to a file.
//!
//! One writer thread per sink owns the file; publishers serialize on their own thread and queue
//! the line (a bounded queue: a slow disk pushes back). The writer drains whatever is queued,
//! flushes once, and only then acknowledges those lines: a group commit, so an acknowledgement
//! means the bytes reached the operating system, at the cost of one `write` per batch.

use crate::{Accepting, Event, Receipt, Sink, SinkError, structured};
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// Lines queued per sink before `publish` waits.
const QUEUE: usize = 4096;
/// Most lines written between two flushes.
const BATCH: usize = 1024;

struct Job {
    /// Empty for a flush request.
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), SinkError>>,
}

/// Queue and writer thread of a [`JsonLinesSink`].
struct LineWriter {
    name: String,
    tx: mpsc::Sender<Job>,
}

impl LineWriter {
    fn spawn(name: String, out: Box<dyn Write + Send>) -> Result<Self, SinkError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread_name = name.clone();
        std::thread::Builder::new()
            .name(format!(
                "sink-{}",
                thread_name.chars().take(10).collect::<String>()
            ))
            .spawn(move || write_loop(&thread_name, out, rx))
            .map_err(|e| SinkError::io(&name, e))?;
        Ok(Self { name, tx })
    }

    async fn enqueue(&self, line: Vec<u8>) -> Result<Receipt, SinkError> {
        let (done, acked) = oneshot::channel();
        self.tx
            .send(Job { line, done })
            .await
            .map_err(|_| SinkError::permanent(&self.name, "writer thread has stopped"))?;
        let name = self.name.clone();
        Ok(Box::pin(async move {
            acked
                .await
                .unwrap_or_else(|_| Err(SinkError::permanent(&name, "writer thread has stopped")))
        }))
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        let mut line = structured::to_vec(event);
        line.push(b'\n');
        Box::pin(self.enqueue(line))
    }

    fn flush(&self) -> Accepting<'_> {
        Box::pin(self.enqueue(Vec::new()))
    }
}

fn write_loop(name: &str, out: Box<dyn Write + Send>, mut rx: mpsc::Receiver<Job>) {
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut waiting = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut result = out.write_all(&first.line);
        waiting.push(first.done);
        while waiting.len() < BATCH && result.is_ok() {
            match rx.try_recv() {
                Ok(job) => {
                    result = out.write_all(&job.line);
                    waiting.push(job.done);
                }
                Err(_) => break,
            }
        }
        let result = result.and_then(|()| out.flush());
        for done in waiting.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(SinkError::io(
                    name,
                    std::io::Error::new(e.kind(), e.to_string()),
                )),
            };
            // The publisher may have given up on its receipt; nothing to tell it then.
            let _ = done.send(outcome);
        }
    }
}

/// `--sink stdout` and `--sink file:PATH`: one structured CloudEvent per line.
pub struct JsonLinesSink(LineWriter);

impl JsonLinesSink {
    /// Writes to standard output.
    pub fn stdout() -> Result<Self, SinkError> {
        LineWriter::spawn("stdout".to_owned(), Box::new(std::io::stdout())).map(Self)
    }

    /// Appends to a file, creating it if absent.
    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let name = format!("file:{}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SinkError::io(&name, e))?;
        LineWriter::spawn(name, Box::new(file)).map(Self)
    }
}

impl Sink for JsonLinesSink {
    fn key_order(&self) -> crate::KeyOrder {
        crate::KeyOrder::Pipelined
    }

    fn name(&self) -> &str {
        &self.0.name
    }
    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        self.0.publish(event)
    }
    fn flush(&self) -> Accepting<'_> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event(id: usize) -> Event {
        EventBuilderV10::new()
            .id(id.to_string())
            .source("/s")
            .ty("t")
            .build()
            .expect("valid event")
    }

    #[tokio::test]
    async fn file_sink_appends_lines_and_acks_after_they_are_written() {
        let dir = std::env::temp_dir().join(format!("sink-core-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "existing\n").expect("seed file");
        let sink = JsonLinesSink::file(&path).expect("open");
        let mut receipts = Vec::new();
        for i in 0..3000 {
            receipts.push(sink.publish(&event(i)).await.expect("accepted"));
        }
        // Acknowledged means readable from the file by anyone else.
        for r in receipts {
            r.await.expect("acked");
        }
        let text = std::fs::read_to_string(&path).expect("read back");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3001);
        assert_eq!(lines[0], "existing");
        assert!(lines[3000].contains(r#""id":"2999""#));
        sink.flush()
            .await
            .expect("flush accepted")
            .await
            .expect("flushed");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn file_sink_in_a_missing_directory_is_a_config_error() {
        match JsonLinesSink::file(Path::new("/nonexistent-dir/x/events.jsonl")) {
            Err(err) => assert_eq!(err.class(), "config"),
            Ok(_) => panic!("opening a file in a missing directory must fail"),
        }
    }
}
