//! The RBAC rules in `deploy/` cover exactly the API calls the bridge makes, no more: the binary
//! runs against the fake API server with everything that calls the API switched on (watches,
//! ConfigMap checkpoint, leader election, a clean shutdown releasing the Lease), and every request
//! it made, as (API group, resource, verb), must be granted — and every grant must have been used;
//! by the kustomize overlays' rules and by the Helm chart's, rendered with the real helm.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support;

use support::bridge::{Scratch, stderr, wait};
use support::helm;
use support::live::{
    Cluster, FAST_LEASE, count_lines, live_bridge, many_runs, settle, sigterm, wait_synced,
};

type Grant = (String, String, String);

/// `(group, resource, verb)` of one request line of the fake (`GET /apis/…[?watch]`).
fn grant_of(request: &str) -> Option<Grant> {
    let (method, rest) = request.split_once(' ')?;
    let (path, watching) = match rest.strip_suffix("?watch") {
        Some(path) => (path, true),
        None => (rest, false),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/… (core) or /apis/GROUP/VERSION/…; discovery (/api, /apis, /version) is not RBAC'd.
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (resource, named) = match rest {
        ["namespaces", _ns, resource, _name] => (*resource, true),
        ["namespaces", _ns, resource] => (*resource, false),
        [resource, _name] => (*resource, true),
        [resource] => (*resource, false),
        _ => return None,
    };
    let verb = match (method, named, watching) {
        ("GET", _, true) => "watch",
        ("GET", true, false) => "get",
        ("GET", false, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", _, _) => "delete",
        _ => return None,
    };
    Some((group.to_owned(), resource.to_owned(), verb.to_owned()))
}

/// Every (group, resource, verb) a Role or ClusterRole file grants.
fn granted(path: &str) -> BTreeSet<Grant> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let role: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).expect("role file")).expect("YAML");
    helm::grants(&role)
}

#[test]
fn request_paths_map_to_grants() {
    let g = |s: &str| grant_of(s).map(|(a, b, c)| format!("{a}/{b}/{c}"));
    assert_eq!(
        g("GET /apis/argoproj.io/v1alpha1/workflows?watch").as_deref(),
        Some("argoproj.io/workflows/watch")
    );
    assert_eq!(g("GET /api/v1/events").as_deref(), Some("/events/list"));
    assert_eq!(
        g("PUT /apis/coordination.k8s.io/v1/namespaces/ns/leases/l").as_deref(),
        Some("coordination.k8s.io/leases/update")
    );
    assert_eq!(
        g("GET /api/v1/namespaces/ns/configmaps/c").as_deref(),
        Some("/configmaps/get")
    );
    assert_eq!(g("GET /apis").as_deref(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_rules_cover_exactly_the_calls_the_bridge_makes() {
    let scratch = Scratch::new("rbac");
    let cluster = Cluster::start(&scratch).await;
    let lines = many_runs(1);
    let out = scratch.path("out.jsonl");
    let mut bridge = live_bridge(
        &cluster,
        &out,
        &scratch.path("unused"),
        &[
            "--checkpoint",
            "configmap:default/kfp-event-bridge-checkpoint",
            "--leader-election",
            "--leader-election-namespace",
            "default",
        ]
        .iter()
        .chain(&FAST_LEASE)
        .copied()
        .collect::<Vec<_>>(),
    );
    wait_synced(&mut bridge, Duration::from_secs(30)).await;
    cluster.feed(&lines);
    settle(&out, 1, Duration::from_secs(3), Duration::from_secs(60)).await;
    assert!(count_lines(&out) > 0);
    // Renewals happen, checkpoint journal slots are written (created); another writer changes
    // (or creates) every shard and journal slot, so the next writes conflict and the bridge
    // reads them back (get) and writes the union (update).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names = kfp_event_bridge::checkpoint::object_names("kfp-event-bridge-checkpoint", 32);
    for name in names.iter().filter(|n| {
        let rest = &n["kfp-event-bridge-checkpoint-".len()..];
        rest.starts_with('j') || !rest.contains('-')
    }) {
        let shard = cluster
            .api
            .get(fake_apiserver::Kind::ConfigMap, "default", name)
            .unwrap_or_else(|| {
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}, "data": {}})
            });
        cluster.api.apply(shard);
    }
    cluster.feed(&many_runs(2)[lines.len()..]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sigterm(&bridge);
    let status = wait(&mut bridge, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", stderr(&mut bridge));

    let used: BTreeSet<Grant> = cluster
        .api
        .requests()
        .keys()
        .filter_map(|r| grant_of(r))
        .collect();
    let mut rules = granted("deploy/base/role.yaml");
    let watch = granted("deploy/overlays/cluster/clusterrole.yaml");
    assert_eq!(
        watch,
        granted("deploy/overlays/namespace/role.yaml"),
        "the namespace overlay grants in one namespace what the cluster overlay grants in all"
    );
    rules.extend(watch);
    let missing: Vec<_> = used.difference(&rules).collect();
    assert!(
        missing.is_empty(),
        "calls the RBAC rules do not grant: {missing:?}"
    );
    let unused: Vec<_> = rules.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "grants the bridge never used: {unused:?}"
    );

    // The Helm chart's rules, rendered by the real helm (3 and 4), cluster-wide and for a list
    // of namespaces: the same calls, no more.
    for (bin, version) in helm::helms() {
        for scope in [
            vec![],
            vec![
                "--set",
                "watch.scope=namespaces",
                "--set",
                "watch.namespaces={a,b}",
            ],
        ] {
            let objects =
                helm::render(&bin, &[], &scope).unwrap_or_else(|e| panic!("helm {version}: {e}"));
            let mut chart = BTreeSet::new();
            for kind in ["Role", "ClusterRole"] {
                for role in helm::of_kind(&objects, kind) {
                    chart.extend(helm::grants(role));
                }
            }
            let missing: Vec<_> = used.difference(&chart).collect();
            assert!(
                missing.is_empty(),
                "helm {version} {scope:?}: calls the chart's RBAC does not grant: {missing:?}"
            );
            let unused: Vec<_> = chart.difference(&used).collect();
            assert!(
                unused.is_empty(),
                "helm {version} {scope:?}: chart grants the bridge never used: {unused:?}"
            );
            // Where a grant is limited to names (the checkpoint's shards, the Lease), every
            // object the bridge named is among them.
            let rules: Vec<&serde_yaml::Value> = ["Role", "ClusterRole"]
                .iter()
                .flat_map(|kind| helm::of_kind(&objects, kind))
                .flat_map(|role| role["rules"].as_sequence().unwrap())
                .collect();
            for request in cluster.api.requests().keys() {
                let (Some((group, resource, verb)), Some(name)) =
                    (grant_of(request), name_of(request))
                else {
                    continue;
                };
                let allowed = rules.iter().any(|rule| {
                    let has = |field: &str, want: &str| {
                        rule[field]
                            .as_sequence()
                            .is_some_and(|l| l.iter().any(|v| v == want))
                    };
                    has("apiGroups", &group)
                        && has("resources", &resource)
                        && has("verbs", &verb)
                        && (rule["resourceNames"].is_null() || has("resourceNames", &name))
                });
                assert!(
                    allowed,
                    "helm {version}: {request}: {verb} of {resource} {name} is not granted"
                );
            }
        }
    }
}

/// The object a request names (`…/<resource>/<name>`), if it names one.
fn name_of(request: &str) -> Option<String> {
    let path = request.split_once(' ')?.1.trim_end_matches("?watch");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        ["namespaces", _, _, name] | [_, name] => Some((*name).to_owned()),
        _ => None,
    }
}
