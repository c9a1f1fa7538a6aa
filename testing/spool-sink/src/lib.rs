//! `spool:DIR` — a test-only sink: each event becomes `DIR/<n>.json` (structured mode, `n`
//! counting up), written to a temporary name and renamed, so a reader sees whole events in the
//! order they were acknowledged. It exists to show what adding a sink takes: this crate, a
//! [`SinkFactory`], and one `register` call — no other sink, and not the core, changes.

use sink_core::{
    Accepting, Event, KeyOrder, Opening, Sink, SinkConfig, SinkError, SinkFactory, settled,
    structured,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Mutex;

/// Options whose values are safe to show: `prefix` names the files.
pub const SHOWN_OPTIONS: &[&str] = &["prefix"];

/// Opens `spool:DIR[?prefix=P]`.
pub struct SpoolFactory;

impl SinkFactory for SpoolFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["spool"]
    }

    fn shown_options(&self) -> &'static [&'static str] {
        SHOWN_OPTIONS
    }

    fn open<'a>(&'a self, config: SinkConfig<'a>) -> Opening<'a> {
        Box::pin(async move {
            let display = config.display(SHOWN_OPTIONS);
            let (path, query) = config
                .uri
                .strip_prefix("spool:")
                .unwrap_or_default()
                .split_once('?')
                .unwrap_or((config.uri.strip_prefix("spool:").unwrap_or_default(), ""));
            let mut options: Vec<(String, String)> = sink_core::uri::params(query)
                .map_err(|m| SinkError::config(&display, m))?
                .into_iter()
                .map(|p| (p.key.to_owned(), p.value))
                .collect();
            options.extend(config.options.unwrap_or_default().iter().cloned());
            let mut prefix = String::new();
            for (key, value) in options {
                match key.as_str() {
                    "prefix" => prefix = value,
                    other => {
                        return Err(SinkError::config(
                            &display,
                            format!("unknown option {other:?} (spool takes prefix)"),
                        ));
                    }
                }
            }
            if path.is_empty() {
                return Err(SinkError::config(
                    &display,
                    "spool needs a directory: spool:DIR",
                ));
            }
            tokio::fs::create_dir_all(path)
                .await
                .map_err(|e| SinkError::io(&display, e))?;
            Ok(Arc::new(SpoolSink {
                name: display,
                dir: PathBuf::from(path),
                prefix,
                next: AtomicU64::new(0),
                write: Mutex::new(()),
            }) as Arc<dyn Sink>)
        })
    }
}

struct SpoolSink {
    name: String,
    dir: PathBuf,
    prefix: String,
    next: AtomicU64,
    /// One write at a time: files appear in publish order.
    write: Mutex<()>,
}

impl Sink for SpoolSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_order(&self) -> KeyOrder {
        KeyOrder::Pipelined
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        Box::pin(async move {
            let _one = self.write.lock().await;
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let file = self.dir.join(format!("{}{n:012}.json", self.prefix));
            let temporary = self.dir.join(format!(".{}{n:012}.tmp", self.prefix));
            let bytes = structured::to_vec(event);
            let written = async {
                tokio::fs::write(&temporary, &bytes).await?;
                tokio::fs::rename(&temporary, &file).await
            }
            .await;
            Ok(settled(written.map_err(|e| SinkError::io(&self.name, e))))
        })
    }

    fn health(&self) -> sink_core::Checking<'_> {
        Box::pin(async move {
            match tokio::fs::metadata(&self.dir).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(SinkError::config(&self.name, "not a directory")),
                Err(e) => Err(SinkError::io(&self.name, e)),
            }
        })
    }
}

/// The events in `dir`, in the order the sink wrote them (for readers and tests).
pub fn spooled(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}
