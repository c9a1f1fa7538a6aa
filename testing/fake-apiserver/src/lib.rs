//! A fake of the parts of the Kubernetes API server kfp-event-bridge uses, faithful to the
//! documented API concepts, for tests: no real apiserver can be installed where this project is
//! built and tested.
//!
//! What it serves (HTTP on `127.0.0.1:0`, no auth; point a kubeconfig at it):
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`;
//! - Argo `workflows` (`argoproj.io/v1alpha1`), core `events`, `configmaps`, and
//!   `coordination.k8s.io/v1` `leases`, cluster-wide and per namespace;
//! - list with `metadata.resourceVersion` on the list and every object, `limit`/`continue`
//!   paging served from a snapshot, `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`) and
//!   `fieldSelector` (`path=v`, `path!=v` over any dotted field, e.g. `involvedObject.kind`);
//! - watch (`watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`): one JSON
//!   watch event per line, strictly after `N`; an `ERROR` event carrying a 410 `Status` when `N`
//!   is older than the retained history; `BOOKMARK`s; closed after `timeoutSeconds`; without `N`
//!   (or `0`) the current objects first as `ADDED`;
//! - get, create (409 `AlreadyExists`), replace (409 `Conflict` on a stale
//!   `metadata.resourceVersion`, unconditional without one) and delete; a ConfigMap whose data
//!   is over 1 MiB is refused (422 `Invalid`, "Too long"), as the API server's validation does.
//!
//! Test controls:
//! - [`FakeApiServer::apply`], [`FakeApiServer::delete`] and [`FakeApiServer::feed_line`] (a
//!   recording line played live);
//! - [`FakeApiServer::compact`] (history dropped: resuming watches get 410),
//!   [`FakeApiServer::force_410`], [`FakeApiServer::cut_watches`];
//! - [`FakeApiServer::set_unavailable`] (every request 503);
//! - [`FakeApiServer::set_cost`]: a cost model for a real apiserver with etcd behind it — a
//!   latency added to every request (for a watch, before its stream starts) and, for writes
//!   (`POST`, `PUT`, `PATCH`, `DELETE`), a bandwidth: the request body's bytes at
//!   `write_bytes_per_sec`, writes taking turns as etcd applies them one after the other. Zero
//!   by default;
//! - [`FakeApiServer::requests`] (counts by `METHOD path`) and [`FakeApiServer::costs`]
//!   (requests, request body bytes and response body bytes by verb and resource — a watch's
//!   response bytes are those streamed so far), [`FakeApiServer::reset_costs`].
//!
//! The resource version is a global counter, as etcd's revision is; clients must treat it as
//! opaque, and the bridge does.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// What a request costs the server, set with [`FakeApiServer::set_cost`]; zero by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Added to every request before it is served (a watch: before its stream starts).
    pub per_request: Duration,
    /// Writes (`POST`, `PUT`, `PATCH`, `DELETE`) also take their body's bytes at this rate,
    /// one write at a time (etcd applies writes in order); `None` or 0: no write cost.
    pub write_bytes_per_sec: Option<u64>,
}

impl Cost {
    /// The extra time a write of `bytes` body bytes takes.
    pub fn write_delay(&self, bytes: usize) -> Duration {
        match self.write_bytes_per_sec {
            Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 / rate as f64),
            _ => Duration::ZERO,
        }
    }
}

/// What the requests of one verb on one resource cost ([`FakeApiServer::costs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes; for a watch, what it has streamed so far.
    pub response_bytes: u64,
}

/// `(verb, resource)`: the verb `get`, `list`, `watch`, `create`, `update`, `patch` or
/// `delete`; the resource as its path names it (`workflows`, `events`, `configmaps`, `leases`,
/// …), `discovery` for `/version`, `/api` and `/apis…`.
pub type CostKey = (String, String);

/// The resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Workflow,
    Event,
    ConfigMap,
    Lease,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Workflow, Kind::Event, Kind::ConfigMap, Kind::Lease];

    fn group_version(self) -> &'static str {
        match self {
            Kind::Workflow => "argoproj.io/v1alpha1",
            Kind::Event | Kind::ConfigMap => "v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Workflow => "Workflow",
            Kind::Event => "Event",
            Kind::ConfigMap => "ConfigMap",
            Kind::Lease => "Lease",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Workflow => "workflows",
            Kind::Event => "events",
            Kind::ConfigMap => "configmaps",
            Kind::Lease => "leases",
        }
    }

    fn from_path(group_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group_version() == group_version && k.plural() == plural)
    }

    /// The kind of an object, from its `apiVersion` and `kind`.
    pub fn of(object: &Value) -> Option<Kind> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        let api_version = if api_version == "events.k8s.io/v1" {
            "v1"
        } else {
            api_version
        };
        Kind::ALL
            .into_iter()
            .find(|k| k.group_version() == api_version && k.name() == kind)
    }
}

type Key = (Kind, String, String);

/// A list's items at its resource version, kept for its continuation pages.
type Snapshot = (u64, Arc<Vec<Arc<Value>>>);

/// One change, as watches deliver it.
#[derive(Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    ty: &'static str,
    object: Arc<Value>,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Change>,
    /// Watches from a resource version below this get 410 Gone.
    oldest: u64,
    history_limit: usize,
    snapshots: HashMap<u64, Snapshot>,
    next_snapshot: u64,
    uids: u64,
    /// Kinds whose next resuming watch is refused with 410 ([`FakeApiServer::force_410`]).
    refuse_resume: Vec<Kind>,
    /// What the next watches (or lists) of a kind get instead of a proper answer, in turn
    /// ([`FakeApiServer::garbage`]).
    garbage: VecDeque<(Kind, bool, Garbage)>,
}

/// A broken answer the server gives once, in place of a watch's or a list's
/// ([`FakeApiServer::garbage`]): what a proxy, a load balancer or a misbehaving server in front
/// of the real one sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Garbage {
    /// 502 Bad Gateway with an HTML page (`text/html`) for a body.
    Html502,
    /// 200 and the backlog's first event cut in the middle of its JSON, then the end.
    Truncated,
    /// 200, then a line that is not JSON at all, then the end.
    NotJson,
    /// 200 and an `ERROR` event whose object is this (a Status other than 410, or no Status).
    Error(Value),
    /// 200, headers only, then nothing — never a byte — until the client goes away.
    Silent,
}

struct Shared {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    cut: watch::Sender<u64>,
    unavailable: AtomicBool,
    bookmark_every: Duration,
    requests: Mutex<BTreeMap<String, u64>>,
    cost: Mutex<Cost>,
    costs: Mutex<BTreeMap<CostKey, Counters>>,
    /// Held while a write's bandwidth cost elapses: writes take turns.
    disk: tokio::sync::Mutex<()>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, key: &CostKey, update: impl FnOnce(&mut Counters)) {
        let mut costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
        match costs.get_mut(key) {
            Some(counters) => update(counters),
            None => update(costs.entry(key.clone()).or_default()),
        }
    }
}

/// A running fake apiserver; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts on `127.0.0.1:0` with the default history (10,000 changes) and bookmarks every
    /// second.
    pub async fn start() -> Self {
        Self::start_with(10_000, Duration::from_secs(1)).await
    }

    /// Starts keeping the last `history_limit` changes for watches to resume from.
    pub async fn start_with(history_limit: usize, bookmark_every: Duration) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 1000,
                history_limit: history_limit.max(1),
                snapshots: HashMap::new(),
                next_snapshot: 0,
                uids: 0,
                refuse_resume: Vec::new(),
                garbage: VecDeque::new(),
            }),
            changes,
            cut: watch::channel(0).0,
            unavailable: AtomicBool::new(false),
            bookmark_every,
            requests: Mutex::new(BTreeMap::new()),
            cost: Mutex::new(Cost::default()),
            costs: Mutex::new(BTreeMap::new()),
            disk: tokio::sync::Mutex::new(()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig that points at this server (no credentials).
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Creates or updates an object (its kind from `apiVersion`/`kind`), assigning a uid when it
    /// has none and a new resource version; returns that version.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = Kind::of(&object).expect("object has a served apiVersion/kind");
        let key = key_of(kind, &object);
        let mut inner = self.shared.lock();
        let existing = inner.objects.get(&key).cloned();
        let uid = match existing.as_deref() {
            Some(old) => old["metadata"]["uid"].clone(),
            None => match &object["metadata"]["uid"] {
                Value::String(u) if !u.is_empty() => Value::String(u.clone()),
                _ => {
                    inner.uids += 1;
                    Value::String(format!("00000000-0000-4000-8000-{:012}", inner.uids))
                }
            },
        };
        object["metadata"]["uid"] = uid;
        let ty = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        commit(&self.shared, &mut inner, kind, key, ty, object)
    }

    /// Deletes an object; the watch event carries its last state. `false` if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut inner = self.shared.lock();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(old) = inner.objects.get(&key).cloned() else {
            return false;
        };
        commit(
            &self.shared,
            &mut inner,
            kind,
            key,
            "DELETED",
            (*old).clone(),
        );
        true
    }

    /// Plays one recording line (`{"type":…,"object":…}`) live: `ADDED`/`MODIFIED` apply the
    /// object, `DELETED` deletes it. Other lines are ignored.
    pub fn feed_line(&self, line: &str) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let object = event["object"].clone();
        let Some(kind) = Kind::of(&object) else {
            return;
        };
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                self.apply(object);
            }
            Some("DELETED") => {
                let (_, ns, name) = key_of(kind, &object);
                self.delete(kind, &ns, &name);
            }
            _ => {}
        }
    }

    /// Drops the retained history: a watch resuming from any earlier version gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
        inner.snapshots.clear();
    }

    /// Ends every open watch stream, and refuses each kind's next resuming watch with 410 Gone, as
    /// if the server's watch cache had moved past it: clients must list again.
    pub fn force_410(&self) {
        self.shared.lock().refuse_resume = Kind::ALL.to_vec();
        self.cut_watches();
    }

    /// The next watch (`watch: true`) or list (`false`) of `kind` gets `garbage` instead of its
    /// answer; queued ones are given in turn, one per request. Open watches are cut, so that a
    /// garbage watch comes at once.
    pub fn garbage(&self, kind: Kind, watch: bool, garbage: Garbage) {
        self.shared.lock().garbage.push_back((kind, watch, garbage));
        if watch {
            self.cut_watches();
        }
    }

    /// Garbage still queued (not yet given to a request).
    pub fn garbage_queued(&self) -> usize {
        self.shared.lock().garbage.len()
    }

    /// Ends every open watch stream (clients reconnect from their last version).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// While unavailable every request is answered 503 and open watches are cut.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.cut_watches();
        }
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// One stored object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.shared.lock().objects.get(&key).map(|o| (**o).clone())
    }

    /// Every stored object of a kind.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| (**o).clone())
            .collect()
    }

    /// Requests served so far, by `METHOD path` (`?watch` appended for watches).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the cost model for the requests from now on.
    pub fn set_cost(&self, cost: Cost) {
        *self.shared.cost.lock().unwrap_or_else(|p| p.into_inner()) = cost;
    }

    /// The cost model in force.
    pub fn cost(&self) -> Cost {
        *self.shared.cost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests and bytes so far by `(verb, resource)` (see [`CostKey`]).
    pub fn costs(&self) -> BTreeMap<CostKey, Counters> {
        self.shared
            .costs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets every [`FakeApiServer::costs`] counter back to zero (open watches count on).
    pub fn reset_costs(&self) {
        self.shared
            .costs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn key_of(kind: Kind, object: &Value) -> Key {
    let meta = &object["metadata"];
    (
        kind,
        meta["namespace"].as_str().unwrap_or("").to_owned(),
        meta["name"].as_str().unwrap_or("").to_owned(),
    )
}

/// Stores the change under a new resource version and tells the watches.
fn commit(
    shared: &Shared,
    inner: &mut Inner,
    kind: Kind,
    key: Key,
    ty: &'static str,
    mut object: Value,
) -> u64 {
    inner.rv += 1;
    let rv = inner.rv;
    object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    if object["metadata"]["creationTimestamp"].is_null() {
        object["metadata"]["creationTimestamp"] = Value::String("2026-01-01T00:00:00Z".into());
    }
    object["apiVersion"] = Value::String(kind.group_version().into());
    object["kind"] = Value::String(kind.name().into());
    let object = Arc::new(object);
    if ty == "DELETED" {
        inner.objects.remove(&key);
    } else {
        inner.objects.insert(key, Arc::clone(&object));
    }
    let change = Change {
        rv,
        kind,
        ty,
        object,
    };
    inner.history.push_back(change.clone());
    while inner.history.len() > inner.history_limit {
        if let Some(old) = inner.history.pop_front() {
            inner.oldest = old.rv + 1;
        }
    }
    let _ = shared.changes.send(change);
    rv
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut response = json_response(&body);
    *response.status_mut() = code;
    response
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

/// Query parameters, percent-decoded.
fn query_params(query: Option<&str>) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The verb and resource of a request, for [`FakeApiServer::costs`].
fn cost_key(method: &Method, segments: &[&str], watching: bool) -> CostKey {
    let rest = match segments {
        ["version"] | ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
            return ("get".into(), "discovery".into());
        }
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => &[][..],
    };
    let (resource, named) = match rest {
        [plural] | ["namespaces", _, plural] => (*plural, false),
        ["namespaces", _, plural, _] => (*plural, true),
        _ => ("unknown", false),
    };
    let verb = match *method {
        Method::GET if named => "get",
        Method::GET if watching => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        ref other => return (other.as_str().to_ascii_lowercase(), resource.to_owned()),
    };
    (verb.to_owned(), resource.to_owned())
}

/// Counts the request, makes it cost what the model says, serves it and counts its response.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = query_params(query.as_deref());
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let key = {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        cost_key(&method, &segments, watching)
    };
    {
        let mut requests = shared.requests.lock().unwrap_or_else(|p| p.into_inner());
        let label = format!(
            "{method} {}{}",
            uri.path(),
            if watching { "?watch" } else { "" }
        );
        *requests.entry(label).or_default() += 1;
    }
    shared.count(&key, |c| {
        c.requests += 1;
        c.request_bytes += body.len() as u64;
    });
    let cost = *shared.cost.lock().unwrap_or_else(|p| p.into_inner());
    if !cost.per_request.is_zero() {
        tokio::time::sleep(cost.per_request).await;
    }
    let write_delay = match method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => cost.write_delay(body.len()),
        _ => Duration::ZERO,
    };
    if !write_delay.is_zero() {
        let _turn = shared.disk.lock().await;
        tokio::time::sleep(write_delay).await;
    }
    let response = route(&shared, method, &uri, &params, watching, &body);
    let (parts, body) = response.into_parts();
    if watching {
        let shared = Arc::clone(&shared);
        let counted = body.into_data_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                shared.count(&key, |c| c.response_bytes += bytes.len() as u64);
            }
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(counted));
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.count(&key, |c| c.response_bytes += bytes.len() as u64);
    Response::from_parts(parts, Body::from(bytes))
}

/// Serves a request (counted, its cost paid).
fn route(
    shared: &Arc<Shared>,
    method: Method,
    uri: &Uri,
    params: &HashMap<String, String>,
    watching: bool,
    body: &[u8],
) -> Response {
    if shared.unavailable.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    if let Some(found) = discovery(&segments) {
        return json_response(&found);
    }
    let (group_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let Some(kind) = Kind::from_path(&group_version, plural) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if matches!((&method, name), (&Method::GET, None)) {
        let mut inner = shared.lock();
        let at = inner
            .garbage
            .iter()
            .position(|(k, w, _)| *k == kind && *w == watching);
        if let Some(garbage) = at.and_then(|at| inner.garbage.remove(at)).map(|g| g.2) {
            let first = inner
                .objects
                .iter()
                .find(|((k, _, _), _)| *k == kind)
                .map(|(_, object)| Arc::clone(object));
            drop(inner);
            return garbage_response(garbage, first.as_deref());
        }
    }
    match (method, name) {
        (Method::GET, None) if watching => watch_stream(shared, kind, namespace, params),
        (Method::GET, None) => list(shared, kind, namespace, params),
        (Method::GET, Some(name)) => {
            let key = (kind, namespace.unwrap_or("").to_owned(), name.to_owned());
            match shared.lock().objects.get(&key) {
                Some(object) => json_response(object),
                None => not_found(kind, name),
            }
        }
        (Method::POST, None) => create(shared, kind, namespace.unwrap_or(""), body),
        (Method::PUT, Some(name)) => replace(shared, kind, namespace.unwrap_or(""), name, body),
        (Method::DELETE, Some(name)) => {
            let key = (kind, namespace.unwrap_or("").to_owned(), name.to_owned());
            let mut inner = shared.lock();
            let Some(old) = inner.objects.get(&key).cloned() else {
                return not_found(kind, name);
            };
            commit(shared, &mut inner, kind, key, "DELETED", (*old).clone());
            json_response(
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}),
            )
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

fn not_found(kind: Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} {name:?} not found", kind.plural()),
    )
}

fn discovery(segments: &[&str]) -> Option<Value> {
    let resources = |gv: &str| {
        let list: Vec<Value> = Kind::ALL
            .into_iter()
            .filter(|k| k.group_version() == gv)
            .map(|k| json!({"name": k.plural(), "namespaced": true, "kind": k.name(), "verbs": ["create","delete","get","list","update","watch"]}))
            .collect();
        json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion": gv, "resources": list})
    };
    Some(match segments {
        ["version"] => {
            json!({"major":"1","minor":"33","gitVersion":"v1.33.0-fake","platform":"linux/amd64"})
        }
        ["api"] => json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}),
        ["apis"] => {
            let group = |name: &str, version: &str| {
                let gv = format!("{name}/{version}");
                json!({"name": name, "versions": [{"groupVersion": gv, "version": version}], "preferredVersion": {"groupVersion": gv, "version": version}})
            };
            json!({"kind":"APIGroupList","apiVersion":"v1","groups":[group("argoproj.io","v1alpha1"), group("coordination.k8s.io","v1")]})
        }
        ["api", "v1"] => resources("v1"),
        ["apis", "argoproj.io", "v1alpha1"] => resources("argoproj.io/v1alpha1"),
        ["apis", "coordination.k8s.io", "v1"] => resources("coordination.k8s.io/v1"),
        _ => return None,
    })
}

/// `labelSelector` and `fieldSelector`, as far as the bridge uses them.
struct Selectors {
    labels: Vec<(String, Op)>,
    fields: Vec<(String, Op)>,
}

enum Op {
    Eq(String),
    Ne(String),
    Exists,
    Absent,
}

impl Selectors {
    fn parse(params: &HashMap<String, String>) -> Self {
        let parse = |text: Option<&String>| {
            text.map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|term| {
                        if let Some((k, v)) = term.split_once("!=") {
                            (k.trim().to_owned(), Op::Ne(v.trim().to_owned()))
                        } else if let Some((k, v)) = term.split_once("==") {
                            (k.trim().to_owned(), Op::Eq(v.trim().to_owned()))
                        } else if let Some((k, v)) = term.split_once('=') {
                            (k.trim().to_owned(), Op::Eq(v.trim().to_owned()))
                        } else if let Some(k) = term.strip_prefix('!') {
                            (k.trim().to_owned(), Op::Absent)
                        } else {
                            (term.to_owned(), Op::Exists)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        Self {
            labels: parse(params.get("labelSelector")),
            fields: parse(params.get("fieldSelector")),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let check = |value: Option<&str>, op: &Op| match op {
            Op::Eq(v) => value == Some(v.as_str()),
            Op::Ne(v) => value != Some(v.as_str()),
            Op::Exists => value.is_some(),
            Op::Absent => value.is_none(),
        };
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|(k, op)| check(labels.get(k).and_then(Value::as_str), op))
            && self.fields.iter().all(|(path, op)| {
                // The Event field `source` is `source.component`, as the real server maps it.
                let path = if path == "source" {
                    "source.component"
                } else {
                    path
                };
                let value = path
                    .split('.')
                    .try_fold(object, |v, part| v.get(part))
                    .and_then(Value::as_str);
                // Field selectors compare absent fields as empty strings.
                check(Some(value.unwrap_or("")), op)
            })
    }
}

fn in_scope(object: &Value, namespace: Option<&str>, selectors: &Selectors) -> bool {
    namespace.is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && selectors.matches(object)
}

fn list(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    params: &HashMap<String, String>,
) -> Response {
    let selectors = Selectors::parse(params);
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut inner = shared.lock();
    // A continued list reads the snapshot of its first page, at the same resource version.
    let (snapshot_id, list_rv, items, offset) = match params
        .get("continue")
        .filter(|c| !c.is_empty())
    {
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
            let Some(((list_rv, items), id, offset)) =
                parsed.and_then(|(id, off)| inner.snapshots.get(&id).map(|s| (s.clone(), id, off)))
            else {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            };
            (Some(id), list_rv, items, offset)
        }
        None => {
            let items: Vec<Arc<Value>> = inner
                .objects
                .iter()
                .filter(|((k, _, _), o)| *k == kind && in_scope(o, namespace, &selectors))
                .map(|(_, o)| Arc::clone(o))
                .collect();
            (None, inner.rv, Arc::new(items), 0)
        }
    };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page: Vec<&Value> = items[offset.min(end)..end].iter().map(|o| &**o).collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if end < items.len() {
        let id = snapshot_id.unwrap_or_else(|| {
            inner.next_snapshot += 1;
            let id = inner.next_snapshot;
            inner.snapshots.insert(id, (list_rv, Arc::clone(&items)));
            id
        });
        metadata["continue"] = Value::String(format!("{id}:{end}"));
        metadata["remainingItemCount"] = json!(items.len() - end);
    } else if let Some(id) = snapshot_id {
        inner.snapshots.remove(&id);
    }
    drop(inner);
    json_response(&json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.group_version(),
        "metadata": metadata,
        "items": page,
    }))
}

fn watch_line(ty: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_stream(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<&str>,
    params: &HashMap<String, String>,
) -> Response {
    let selectors = Selectors::parse(params);
    let namespace = namespace.map(str::to_owned);
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = params
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| rv.parse::<u64>());
    let mut inner = shared.lock();
    let forced = matches!(from, Some(Ok(_))) && inner.refuse_resume.contains(&kind);
    if forced {
        inner.refuse_resume.retain(|k| *k != kind);
    }
    let mut live = shared.changes.subscribe();
    let mut cut = shared.cut.subscribe();
    cut.mark_unchanged();
    let mut backlog = Vec::new();
    let after = match from {
        Some(Ok(rv)) if forced || rv + 1 < inner.oldest => {
            let message = format!(
                "too old resource version: {rv} ({})",
                inner.oldest.max(rv + 1)
            );
            let gone = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":"Expired","code":410});
            drop(inner);
            return chunked(futures_util::stream::iter([watch_line("ERROR", &gone)]).boxed());
        }
        Some(Ok(rv)) => {
            for change in inner.history.iter().filter(|c| c.rv > rv && c.kind == kind) {
                if in_scope(&change.object, namespace.as_deref(), &selectors) {
                    backlog.push(watch_line(change.ty, &change.object));
                }
            }
            rv.max(inner.history.back().map_or(rv, |c| c.rv))
        }
        Some(Err(_)) => {
            drop(inner);
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "resourceVersion is not a number",
            );
        }
        None => {
            for ((k, _, _), object) in &inner.objects {
                if *k == kind && in_scope(object, namespace.as_deref(), &selectors) {
                    backlog.push(watch_line("ADDED", object));
                }
            }
            inner.rv
        }
    };
    drop(inner);
    let shared = Arc::clone(shared);
    let stream = async_stream(move |tx: tokio::sync::mpsc::Sender<Bytes>| async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut last = after;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(shared.bookmark_every);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                () = &mut deadline => return,
                _ = cut.changed() => return,
                _ = tick.tick() => {
                    if !bookmarks {
                        continue;
                    }
                    let object = json!({"kind": kind.name(), "apiVersion": kind.group_version(), "metadata": {"resourceVersion": last.to_string()}});
                    watch_line("BOOKMARK", &object)
                }
                change = live.recv() => match change {
                    Ok(change) if change.rv > last => {
                        last = change.rv;
                        if change.kind != kind || !in_scope(&change.object, namespace.as_deref(), &selectors) {
                            continue;
                        }
                        watch_line(change.ty, &change.object)
                    }
                    Ok(_) => continue,
                    // A watcher too slow to keep up is dropped, as the real server does.
                    Err(_) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    chunked(stream)
}

/// What a request gets instead of its answer ([`Garbage`]); `first`: an object of the kind, whose
/// event a truncated answer cuts.
fn garbage_response(garbage: Garbage, first: Option<&Value>) -> Response {
    let lines = |lines: Vec<Bytes>| chunked(futures_util::stream::iter(lines).boxed());
    match garbage {
        Garbage::Html502 => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
            ))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()),
        Garbage::Truncated => {
            let object = first.cloned().unwrap_or_else(|| json!({"metadata": {}}));
            let line = watch_line("ADDED", &object);
            lines(vec![line.slice(..line.len() / 2)])
        }
        Garbage::NotJson => lines(vec![Bytes::from_static(b"<!-- upstream reset -->\n")]),
        Garbage::Error(object) => lines(vec![watch_line("ERROR", &object)]),
        Garbage::Silent => chunked(futures_util::stream::pending().boxed()),
    }
}

/// A stream fed by a spawned task.
fn async_stream<F, Fut>(body: F) -> futures_util::stream::BoxStream<'static, Bytes>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn chunked(stream: futures_util::stream::BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The most a ConfigMap's data may hold.
pub const CONFIGMAP_MAX_BYTES: usize = 1024 * 1024;

fn parse_body(kind: Kind, namespace: &str, body: &[u8]) -> Result<Value, Box<Response>> {
    let mut object: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid body: {e}"),
        ))
    })?;
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(Box::new(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        )));
    }
    if kind == Kind::ConfigMap {
        // The API server's validation: keys and values of `data` and `binaryData` together at
        // most 1 MiB (what etcd's request limit leaves room for).
        let size: usize = ["data", "binaryData"]
            .iter()
            .filter_map(|field| object[*field].as_object())
            .flatten()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > CONFIGMAP_MAX_BYTES {
            let name = object["metadata"]["name"].as_str().unwrap_or("");
            return Err(Box::new(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!(
                    "ConfigMap {name:?} is invalid: []: Too long: must have at most {CONFIGMAP_MAX_BYTES} bytes"
                ),
            )));
        }
    }
    object["metadata"]["namespace"] = Value::String(namespace.to_owned());
    object["apiVersion"] = Value::String(kind.group_version().into());
    object["kind"] = Value::String(kind.name().into());
    Ok(object)
}

fn create(shared: &Shared, kind: Kind, namespace: &str, body: &[u8]) -> Response {
    let mut object = match parse_body(kind, namespace, body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let key = key_of(kind, &object);
    let mut inner = shared.lock();
    if inner.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} {:?} already exists", kind.plural(), key.2),
        );
    }
    inner.uids += 1;
    object["metadata"]["uid"] =
        Value::String(format!("00000000-0000-4000-9000-{:012}", inner.uids));
    commit(shared, &mut inner, kind, key.clone(), "ADDED", object);
    let stored = inner.objects.get(&key).cloned();
    drop(inner);
    let mut response = json_response(stored.as_deref().unwrap_or(&Value::Null));
    *response.status_mut() = StatusCode::CREATED;
    response
}

fn replace(shared: &Shared, kind: Kind, namespace: &str, name: &str, body: &[u8]) -> Response {
    let mut object = match parse_body(kind, namespace, body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    let key = key_of(kind, &object);
    let mut inner = shared.lock();
    let Some(current) = inner.objects.get(&key).cloned() else {
        return not_found(kind, name);
    };
    let current_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("");
    match object["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && rv != current_rv => {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural()
                ),
            );
        }
        _ => {}
    }
    object["metadata"]["uid"] = current["metadata"]["uid"].clone();
    object["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
    commit(shared, &mut inner, kind, key.clone(), "MODIFIED", object);
    let stored = inner.objects.get(&key).cloned();
    drop(inner);
    json_response(stored.as_deref().unwrap_or(&Value::Null))
}

/// Synthetic objects for load and memory measurements.
pub mod synthetic {
    use serde_json::{Value, json};

    /// A running KFP-labelled Argo Workflow with `tasks` Pod nodes under one DAG, all running
    /// (each gives a `task.started`), node ids as Argo makes them (`<workflow>-<number>`).
    pub fn workflow(namespace: &str, name: &str, uid: &str, tasks: usize) -> Value {
        let mut nodes = serde_json::Map::new();
        let children: Vec<String> = (0..tasks)
            .map(|i| format!("{name}-{}", 1_000_000 + i))
            .collect();
        nodes.insert(
            name.to_owned(),
            json!({
                "id": name, "name": name, "displayName": name, "type": "DAG",
                "templateName": "main", "phase": "Running",
                "startedAt": "2026-03-14T09:00:00Z", "children": children,
            }),
        );
        for (i, id) in children.iter().enumerate() {
            nodes.insert(
                id.clone(),
                json!({
                    "id": id, "name": format!("{name}.task-{i}"), "displayName": format!("task-{i}"),
                    "type": "Pod", "templateName": "step", "phase": "Running",
                    "boundaryID": name, "startedAt": "2026-03-14T09:00:05Z",
                    "hostNodeName": "node-1", "progress": "0/1",
                }),
            );
        }
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {
                "name": name, "namespace": namespace, "uid": uid,
                "labels": {"pipeline/runid": uid, "workflows.argoproj.io/phase": "Running"},
                "annotations": {"pipelines.kubeflow.org/run_name": format!("Run of {name}")},
            },
            "spec": {
                "entrypoint": "main",
                "arguments": {"parameters": [{"name": "epochs", "value": "20"}]},
                "templates": [
                    {"name": "main", "dag": {"tasks": (0..tasks).map(|i| json!({"name": format!("task-{i}"), "template": "step"})).collect::<Vec<_>>()}},
                    {"name": "step", "container": {"image": "python:3.12", "command": ["python", "-c", "print(1)"]}},
                ],
            },
            "status": {"phase": "Running", "startedAt": "2026-03-14T09:00:00Z", "nodes": nodes},
        })
    }

    /// Ends task `task` (0-based) of a [`workflow`] in `phase` (`Succeeded`, `Failed`, …) at
    /// `at` (RFC 3339): one more fact (its end). `false` if it has no such task.
    pub fn finish_task(workflow: &mut Value, task: usize, phase: &str, at: &str) -> bool {
        let name = workflow["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let node = &mut workflow["status"]["nodes"][format!("{name}-{}", 1_000_000 + task)];
        if !node.is_object() {
            return false;
        }
        node["phase"] = json!(phase);
        node["finishedAt"] = json!(at);
        node["progress"] = json!("1/1");
        if phase != "Succeeded" {
            node["message"] = json!(format!("task-{task} {phase}: exit code 1"));
        }
        true
    }

    /// Ends a [`workflow`]: every task still running `Succeeded` at `at`, then the workflow (and
    /// its DAG node) in `phase`; a `Failed` or `Error` workflow has its first task end so.
    pub fn finish(workflow: &mut Value, phase: &str, at: &str) {
        let name = workflow["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let tasks = workflow["status"]["nodes"]
            .as_object()
            .map_or(0, |n| n.len().saturating_sub(1));
        for task in 0..tasks {
            let node = &workflow["status"]["nodes"][format!("{name}-{}", 1_000_000 + task)];
            if node["phase"] == "Running" {
                let ended = if task == 0 && phase != "Succeeded" {
                    phase
                } else {
                    "Succeeded"
                };
                finish_task(workflow, task, ended, at);
            }
        }
        let root = &mut workflow["status"]["nodes"][name.as_str()];
        if root.is_object() {
            root["phase"] = json!(phase);
            root["finishedAt"] = json!(at);
        }
        let status = &mut workflow["status"];
        status["phase"] = json!(phase);
        status["finishedAt"] = json!(at);
        status["progress"] = json!(format!("{tasks}/{tasks}"));
        if phase != "Succeeded" {
            status["message"] = json!("child 'task-0' failed");
        }
        let labels = &mut workflow["metadata"]["labels"];
        labels["workflows.argoproj.io/phase"] = json!(phase);
        labels["workflows.argoproj.io/completed"] = json!("true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// One HTTP/1.1 exchange over a fresh connection, blocking: status, body (de-chunked) and
    /// the time until the response's head arrived.
    fn exchange(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>, Duration) {
        let t0 = Instant::now();
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(body).expect("write body");
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        let mut head_at = None;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if head_at.is_none() && raw.windows(4).any(|w| w == b"\r\n\r\n") {
                head_at = Some(t0.elapsed());
            }
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let code = head[9..12].parse().expect("status code");
        let mut rest = &raw[split + 4..];
        let body = if head.contains("transfer-encoding: chunked") {
            let mut out = Vec::new();
            loop {
                let eol = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("chunk size");
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..eol]).expect("hex"), 16)
                        .expect("chunk size");
                if size == 0 {
                    break out;
                }
                out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
                rest = &rest[eol + 2 + size + 2..];
            }
        } else {
            rest.to_vec()
        };
        (code, body, head_at.expect("a response head"))
    }

    async fn call(
        api: &FakeApiServer,
        method: &'static str,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>, Duration) {
        let (addr, path) = (api.addr, path.to_owned());
        tokio::task::spawn_blocking(move || exchange(addr, method, &path, &body))
            .await
            .expect("client thread")
    }

    fn configmap(name: &str, bytes: usize) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"blob": "x".repeat(bytes)},
        }))
        .expect("json")
    }

    const CMS: &str = "/api/v1/namespaces/ns/configmaps";

    /// As the API server validates: a ConfigMap's data over 1 MiB is refused, on create and on
    /// replace, and nothing is stored; 1 MiB exactly is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configmap_over_one_mebibyte_is_refused() {
        let api = FakeApiServer::start().await;
        let fits = CONFIGMAP_MAX_BYTES - "blob".len();
        let (code, _, _) = call(&api, "POST", CMS, configmap("fits", fits)).await;
        assert_eq!(code, 201);
        let (code, body, _) = call(&api, "POST", CMS, configmap("big", fits + 1)).await;
        assert_eq!(code, 422);
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("Too long: must have at most 1048576 bytes"),
            "{body}"
        );
        assert!(api.get(Kind::ConfigMap, "ns", "big").is_none());
        let (code, _, _) = call(
            &api,
            "PUT",
            &format!("{CMS}/fits"),
            configmap("fits", fits + 1),
        )
        .await;
        assert_eq!(code, 422);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latency_is_added_to_every_request_and_to_a_watch_start() {
        let api = FakeApiServer::start().await;
        let (_, _, fast) = call(&api, "GET", "/version", Vec::new()).await;
        assert!(fast < Duration::from_millis(150), "no cost set: {fast:?}");
        api.set_cost(Cost {
            per_request: Duration::from_millis(300),
            write_bytes_per_sec: None,
        });
        for path in ["/version", CMS, &format!("{CMS}/missing")] {
            let (_, _, took) = call(&api, "GET", path, Vec::new()).await;
            assert!(took >= Duration::from_millis(300), "{path}: {took:?}");
        }
        let (code, _, took) = call(&api, "POST", CMS, configmap("a", 10)).await;
        assert_eq!(code, 201);
        assert!(took >= Duration::from_millis(300), "create: {took:?}");
        // A watch's head comes after the latency; the stream then runs its course.
        let watch = format!("{CMS}?watch=true&timeoutSeconds=1");
        let (code, body, head) = call(&api, "GET", &watch, Vec::new()).await;
        assert_eq!(code, 200);
        assert!(head >= Duration::from_millis(300), "watch start: {head:?}");
        assert!(String::from_utf8_lossy(&body).contains("\"ADDED\""));
        api.set_cost(Cost::default());
        let (_, _, fast) = call(&api, "GET", "/version", Vec::new()).await;
        assert!(fast < Duration::from_millis(150), "cost reset: {fast:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_cost_scales_with_the_body_and_writes_take_turns() {
        let api = FakeApiServer::start().await;
        api.set_cost(Cost {
            per_request: Duration::ZERO,
            write_bytes_per_sec: Some(100_000),
        });
        let (code, _, small) = call(&api, "POST", CMS, configmap("small", 10_000)).await;
        assert_eq!(code, 201);
        let (code, _, large) = call(&api, "POST", CMS, configmap("large", 50_000)).await;
        assert_eq!(code, 201);
        assert!(small >= Duration::from_millis(100), "10 KB: {small:?}");
        assert!(small < Duration::from_millis(400), "10 KB: {small:?}");
        assert!(large >= Duration::from_millis(500), "50 KB: {large:?}");
        assert!(large > small * 3, "50 KB {large:?} against 10 KB {small:?}");
        // Reads are not writes: the 50 KB object comes back without the bandwidth cost.
        let (code, body, read) = call(&api, "GET", &format!("{CMS}/large"), Vec::new()).await;
        assert_eq!(code, 200);
        assert!(body.len() > 50_000);
        assert!(read < Duration::from_millis(250), "read: {read:?}");
        // An update pays for its body as a create does; two writes at once take turns.
        let update = {
            let mut cm: Value = serde_json::from_slice(&configmap("small", 20_000)).expect("json");
            cm["metadata"]["resourceVersion"] = json!(api.get(Kind::ConfigMap, "ns", "small")
                .expect("stored")["metadata"]["resourceVersion"]
                .clone());
            serde_json::to_vec(&cm).expect("json")
        };
        let small_path = format!("{CMS}/small");
        let t0 = Instant::now();
        let (first, second) = tokio::join!(
            call(&api, "PUT", &small_path, update),
            call(&api, "POST", CMS, configmap("other", 20_000)),
        );
        assert_eq!((first.0, second.0), (200, 201));
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "two 20 KB writes at once: {:?}",
            t0.elapsed()
        );
        let (code, _, delete) = call(&api, "DELETE", &format!("{CMS}/other"), Vec::new()).await;
        assert_eq!(code, 200);
        assert!(
            delete < Duration::from_millis(250),
            "bodiless delete: {delete:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_counters_count_requests_and_bytes_by_verb_and_resource() {
        let api = FakeApiServer::start().await;
        api.apply(synthetic::workflow("ns", "wf-1", "u-1", 3));
        let created = configmap("c", 100);
        let (_, create_response, _) = call(&api, "POST", CMS, created.clone()).await;
        let mut update: Value = serde_json::from_slice(&create_response).expect("json");
        update["data"]["blob"] = json!("y");
        let update = serde_json::to_vec(&update).expect("json");
        let (code, update_response, _) =
            call(&api, "PUT", &format!("{CMS}/c"), update.clone()).await;
        assert_eq!(code, 200);
        let (_, got, _) = call(&api, "GET", &format!("{CMS}/c"), Vec::new()).await;
        let (_, listed, _) = call(&api, "GET", CMS, Vec::new()).await;
        let (_, listed_workflows, _) = call(
            &api,
            "GET",
            "/apis/argoproj.io/v1alpha1/workflows?limit=10",
            Vec::new(),
        )
        .await;
        let (_, deleted, _) = call(&api, "DELETE", &format!("{CMS}/c"), Vec::new()).await;
        let (_, watched, _) = call(
            &api,
            "GET",
            "/apis/argoproj.io/v1alpha1/namespaces/ns/workflows?watch=true&timeoutSeconds=1",
            Vec::new(),
        )
        .await;
        let (_, version, _) = call(&api, "GET", "/version", Vec::new()).await;
        let len = |b: &[u8]| b.len() as u64;
        let counters = |requests, request_bytes, response_bytes| Counters {
            requests,
            request_bytes,
            response_bytes,
        };
        let key = |verb: &str, resource: &str| (verb.to_owned(), resource.to_owned());
        let want = BTreeMap::from([
            (
                key("create", "configmaps"),
                counters(1, len(&created), len(&create_response)),
            ),
            (
                key("update", "configmaps"),
                counters(1, len(&update), len(&update_response)),
            ),
            (key("get", "configmaps"), counters(1, 0, len(&got))),
            (key("list", "configmaps"), counters(1, 0, len(&listed))),
            (
                key("list", "workflows"),
                counters(1, 0, len(&listed_workflows)),
            ),
            (key("delete", "configmaps"), counters(1, 0, len(&deleted))),
            (key("watch", "workflows"), counters(1, 0, len(&watched))),
            (key("get", "discovery"), counters(1, 0, len(&version))),
        ]);
        assert_eq!(api.costs(), want);
        assert!(String::from_utf8_lossy(&watched).contains("wf-1"));
        // The older per-path counts go on.
        assert_eq!(api.requests()["POST /api/v1/namespaces/ns/configmaps"], 1);
        assert_eq!(
            api.requests()["GET /apis/argoproj.io/v1alpha1/namespaces/ns/workflows?watch"],
            1
        );
        api.reset_costs();
        assert!(api.costs().is_empty());
    }

    #[test]
    fn finished_synthetic_workflows_end_every_node() {
        let mut wf = synthetic::workflow("ns", "wf", "u", 3);
        assert!(synthetic::finish_task(
            &mut wf,
            1,
            "Succeeded",
            "2026-03-14T09:00:30Z"
        ));
        assert!(!synthetic::finish_task(
            &mut wf,
            3,
            "Succeeded",
            "2026-03-14T09:00:30Z"
        ));
        synthetic::finish(&mut wf, "Failed", "2026-03-14T09:01:00Z");
        let nodes = wf["status"]["nodes"].as_object().expect("nodes");
        let phases: Vec<&str> = (0..3)
            .map(|i| {
                nodes[&format!("wf-{}", 1_000_000 + i)]["phase"]
                    .as_str()
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(phases, ["Failed", "Succeeded", "Succeeded"]);
        assert_eq!(nodes["wf-1000001"]["finishedAt"], "2026-03-14T09:00:30Z");
        assert_eq!(nodes["wf"]["phase"], "Failed");
        assert_eq!(wf["status"]["phase"], "Failed");
        assert_eq!(wf["status"]["finishedAt"], "2026-03-14T09:01:00Z");
        assert_eq!(
            wf["metadata"]["labels"]["workflows.argoproj.io/completed"],
            "true"
        );
    }
}
