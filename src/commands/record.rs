//! `record FILE`: what the watches `run` uses see, written as a recording.

use super::{AppError, Outcome, ReplayReport, shutdown_signal};
use crate::cli::RecordArgs;
use crate::source::live;
use futures_util::StreamExt;
use std::io::Write;

/// `record FILE`: writes every watch event of the same watches `run` uses as a recording line,
/// `managedFields` stripped, until interrupted.
pub async fn record(args: &RecordArgs) -> Result<(Outcome, ReplayReport), AppError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::{WatchStreamExt, watcher};
    let client = live::client(args.watch.kubeconfig.as_deref()).await?;
    let config = crate::config::watch(&args.watch);
    let mut out: Box<dyn Write + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args.file)
                .map_err(|source| AppError::Input {
                    path: args.file.display().to_string(),
                    source,
                })?,
        )
    };
    let kinds = [
        (
            GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
            "workflows",
            false,
        ),
        (GroupVersionKind::gvk("", "v1", "Event"), "events", true),
    ];
    let scopes = if config.namespaces.is_empty() {
        vec![String::new()]
    } else {
        config.namespaces.clone()
    };
    let mut streams = futures_util::stream::SelectAll::new();
    for namespace in &scopes {
        for (gvk, plural, is_event) in &kinds {
            if *is_event && !config.events {
                continue;
            }
            let resource = ApiResource::from_gvk_with_plural(gvk, plural);
            let api: Api<DynamicObject> = if namespace.is_empty() {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), namespace, &resource)
            };
            let mut watch = watcher::Config::default().page_size(live::PAGE_SIZE);
            if *is_event {
                watch = watch.fields(live::EVENT_FIELD_SELECTOR);
            } else if let Some(selector) = &config.label_selector {
                watch = watch.labels(selector);
            }
            let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
            streams.push(
                watcher(api, watch)
                    .default_backoff()
                    .map(move |e| (api_version.clone(), kind.clone(), e))
                    .boxed(),
            );
        }
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut report = ReplayReport::default();
    loop {
        let (api_version, kind, event) = tokio::select! {
            () = &mut shutdown => break,
            next = streams.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let (change, mut object) = match event {
            Ok(watcher::Event::InitApply(o)) => ("ADDED", o),
            Ok(watcher::Event::Apply(o)) => ("MODIFIED", o),
            Ok(watcher::Event::Delete(o)) => ("DELETED", o),
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "watch failed; retrying with backoff");
                continue;
            }
        };
        object.metadata.managed_fields = None;
        let mut value = serde_json::to_value(&object).unwrap_or_default();
        value["apiVersion"] = serde_json::Value::String(api_version);
        value["kind"] = serde_json::Value::String(kind);
        let line = serde_json::json!({"type": change, "object": value});
        let written = serde_json::to_writer(&mut out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(source) = written {
            return Err(AppError::Input {
                path: args.file.display().to_string(),
                source,
            });
        }
        report.counts.lines += 1;
    }
    Ok((Outcome::Clean, report))
}
