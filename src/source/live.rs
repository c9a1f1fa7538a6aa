//! The live input: Argo `Workflow`s and the workflow controller's Kubernetes `Event`s, listed and
//! watched with kube-runtime's watcher (paged list, `resourceVersion` resume, re-list on 410 Gone,
//! bookmarks, backoff on errors).
//!
//! Objects are decoded straight into the lenient projections of [`super::objects`] — what
//! derivation reads — and dropped once derived, so memory does not follow the size of Workflow
//! objects (managed fields, templates' bodies and stored specs are never kept).

use super::objects::{ClusterEvent, Workflow};
use super::recording::{Change, Observed};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::fmt;

/// Objects listed per page: bounds the memory of the initial list (KFP workflows with large
/// node trees are tens of kilobytes each).
pub const PAGE_SIZE: u32 = 100;

/// Field selector of the Event watch: only the workflow controller's Events.
pub const EVENT_FIELD_SELECTOR: &str = "source=workflow-controller";

/// A projection plus the identity kube-runtime's watcher tracks (name, namespace, uid and
/// `resourceVersion` — nothing else of `metadata` is copied). An object the projection cannot
/// read (a field of an unexpected type) still decodes, as the error: one bad object must not fail
/// the list or the watch it came in, which would stop every other object's facts.
#[derive(Clone)]
pub struct Watched<T> {
    meta: ObjectMeta,
    pub object: Result<T, String>,
}

/// Only the identity of an object the projection could not read in one pass: each member read
/// on its own, so that nothing else in `metadata` (a label of an unexpected type) hides it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Identity {
    metadata: IdentityMeta,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct IdentityMeta {
    name: serde_json::Value,
    namespace: serde_json::Value,
    uid: serde_json::Value,
    resource_version: serde_json::Value,
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("namespace", &self.meta.namespace)
            .field("name", &self.meta.name)
            .field("resource_version", &self.meta.resource_version)
            .finish()
    }
}

/// What [`Watched`] needs of a projection.
pub trait Projection: Clone + Send + Sync + 'static {
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const PLURAL: &'static str;
    fn metadata(&self) -> &super::objects::ObjectMeta;
}

impl Projection for Workflow {
    const GROUP: &'static str = "argoproj.io";
    const VERSION: &'static str = "v1alpha1";
    const KIND: &'static str = "Workflow";
    const PLURAL: &'static str = "workflows";
    fn metadata(&self) -> &super::objects::ObjectMeta {
        &self.metadata
    }
}

impl Projection for ClusterEvent {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    fn metadata(&self) -> &super::objects::ObjectMeta {
        &self.metadata
    }
}

impl<'de, T: Projection + super::objects::Lenient> Deserialize<'de> for Watched<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as a JSON tree first, so that a failure concerns this object alone (the text
        // cannot be kept instead: watch events reach this through serde's buffered content).
        let value = serde_json::Value::deserialize(deserializer)?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let identity = |m: &super::objects::ObjectMeta| ObjectMeta {
            name: some(&m.name),
            namespace: some(&m.namespace),
            uid: some(&m.uid),
            resource_version: some(&m.resource_version),
            ..ObjectMeta::default()
        };
        if let Ok(object) = T::deserialize(&value) {
            return Ok(Self {
                meta: identity(object.metadata()),
                object: Ok(object),
            });
        }
        // Field by field: what has an unexpected type is dropped where the bridge can do
        // without it (and said), else the object is unreadable.
        let text = |v: &serde_json::Value| v.as_str().and_then(some);
        let meta = Identity::deserialize(&value)
            .map(|i| ObjectMeta {
                name: text(&i.metadata.name),
                namespace: text(&i.metadata.namespace),
                uid: text(&i.metadata.uid),
                resource_version: text(&i.metadata.resource_version),
                ..ObjectMeta::default()
            })
            .unwrap_or_default();
        Ok(match super::objects::decode_lenient::<T>(value) {
            Ok((object, dropped)) => {
                if !dropped.is_empty() {
                    let name = format!(
                        "{}/{}",
                        meta.namespace.as_deref().unwrap_or(""),
                        meta.name.as_deref().unwrap_or("")
                    );
                    super::objects::warn_dropped(
                        <T as super::objects::Lenient>::KIND,
                        &name,
                        &dropped,
                    );
                }
                Self {
                    meta,
                    object: Ok(object),
                }
            }
            Err(err) => Self {
                meta,
                object: Err(err.to_string()),
            },
        })
    }
}

impl<T> Watched<T> {
    /// `namespace/name` as far as readable.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.meta.namespace.as_deref().unwrap_or(""),
            self.meta.name.as_deref().unwrap_or("")
        )
    }
}

impl<T: Projection> Resource for Watched<T> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Which watch an input came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchId {
    /// `workflows` or `events`.
    pub resource: &'static str,
    /// The namespace watched; empty for all.
    pub namespace: String,
}

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace.as_str() {
            "" => write!(f, "{} (all namespaces)", self.resource),
            ns => write!(f, "{} in {ns}", self.resource),
        }
    }
}

/// What the watches report, in the order each watch saw it.
#[derive(Debug)]
pub enum Input {
    /// A (re-)list begins: the objects that follow until [`Input::Listed`] are the full set.
    Listing(usize),
    /// The (re-)list is complete.
    Listed(usize),
    Observed(usize, Observed),
    /// An object the projection could not read (`namespace/name`, uid, the error): skipped.
    Undecodable {
        watch: usize,
        name: String,
        uid: String,
        error: String,
    },
    /// The watch failed; the watcher retries with backoff.
    Failed(usize, String),
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchConfig {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    /// Also watch the workflow controller's Events (on by default).
    pub events: bool,
    /// The API server ends each watch request after this (`timeoutSeconds`); a watch silent for
    /// this and 5 s more is started again (kube-runtime's idle timeout). Zero: kube's default.
    pub timeout: std::time::Duration,
}

impl WatchConfig {
    /// The watcher's settings for one resource.
    fn watcher(&self) -> watcher::Config {
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        match u32::try_from(self.timeout.as_secs()) {
            Ok(secs) if secs > 0 => config.timeout(secs),
            _ => config,
        }
    }
}

/// Starts the watches; the returned list names them by the index the inputs carry.
pub fn watch(
    client: &Client,
    config: &WatchConfig,
) -> (
    Vec<WatchId>,
    impl Stream<Item = Input> + Send + Unpin + 'static,
) {
    let mut ids = Vec::new();
    let mut streams: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    let scopes: Vec<String> = if config.namespaces.is_empty() {
        vec![String::new()]
    } else {
        config.namespaces.clone()
    };
    for namespace in scopes {
        let mut workflows = config.watcher();
        if let Some(selector) = &config.label_selector {
            workflows = workflows.labels(selector);
        }
        ids.push(WatchId {
            resource: "workflows",
            namespace: namespace.clone(),
        });
        streams.push(one::<Workflow>(
            client,
            &namespace,
            workflows,
            ids.len() - 1,
            |c, w| Observed::Workflow(c, Box::new(w)),
        ));
        if config.events {
            let events = config.watcher().fields(EVENT_FIELD_SELECTOR);
            ids.push(WatchId {
                resource: "events",
                namespace: namespace.clone(),
            });
            streams.push(one::<ClusterEvent>(
                client,
                &namespace,
                events,
                ids.len() - 1,
                |c, e| Observed::Event(c, Box::new(e)),
            ));
        }
    }
    (ids, streams)
}

fn one<T>(
    client: &Client,
    namespace: &str,
    config: watcher::Config,
    index: usize,
    wrap: fn(Change, T) -> Observed,
) -> BoxStream<'static, Input>
where
    T: Projection + super::objects::Lenient,
{
    let api: Api<Watched<T>> = if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let stream = watcher(api, config)
        .default_backoff()
        .map(move |event| match event {
            Ok(watcher::Event::Init) => Input::Listing(index),
            Ok(watcher::Event::InitDone) => Input::Listed(index),
            Ok(watcher::Event::InitApply(w)) => observed(index, Change::Added, w, wrap),
            Ok(watcher::Event::Apply(w)) => observed(index, Change::Modified, w, wrap),
            Ok(watcher::Event::Delete(w)) => observed(index, Change::Deleted, w, wrap),
            Err(err) => Input::Failed(index, describe(&err)),
        });
    // What the watcher and the decoding log (a dropped field, a retry) names its watch.
    let span = tracing::info_span!(
        "watch",
        resource = T::PLURAL,
        namespace = if namespace.is_empty() { "*" } else { namespace }
    );
    InSpan {
        inner: stream.boxed(),
        span,
    }
    .boxed()
}

/// A stream polled inside a span: a watch is no task of its own (the main loop polls it), but
/// what happens while it is polled belongs to it.
struct InSpan {
    inner: BoxStream<'static, Input>,
    span: tracing::Span,
}

impl Stream for InSpan {
    type Item = Input;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Input>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll_next(cx)
    }
}

fn observed<T>(
    index: usize,
    change: Change,
    watched: Watched<T>,
    wrap: fn(Change, T) -> Observed,
) -> Input {
    let name = watched.name();
    match watched.object {
        Ok(object) => Input::Observed(index, wrap(change, object)),
        Err(error) => Input::Undecodable {
            watch: index,
            name,
            uid: watched.meta.uid.unwrap_or_default(),
            error,
        },
    }
}

/// Longest watch error kept for the log and `/readyz`: a proxy's error page can be any size.
const ERROR_CHARS: usize = 300;

/// A watch failure in one line a person can read: whitespace (an HTML page's line breaks)
/// collapsed, cut after [`ERROR_CHARS`] characters, and an `ERROR` event without a Status said
/// as such (kube reads it as an empty one).
fn describe(err: &watcher::Error) -> String {
    let text = match err {
        watcher::Error::WatchError(status)
            if status.message.is_empty() && status.reason.is_empty() =>
        {
            format!(
                "the API server sent a watch ERROR event without a readable Status (code {})",
                status.code
            )
        }
        other => other.to_string(),
    };
    crate::telemetry::one_line(&text, ERROR_CHARS)
}

/// A client from `--kubeconfig`, else the usual inference (`KUBECONFIG`, `~/.kube/config`, the
/// in-cluster service account).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClientError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::KubeconfigRead {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    // kube's client retries 429/503/504 up to 15 times (minutes of backoff) before a caller hears
    // of it: that would hide an outage from readiness and stretch Lease renewals past their
    // deadline. The watcher, the elector and the checkpoint retry on their own terms instead.
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// Why no Kubernetes client could be made; kube's error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    KubeconfigRead {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}
