//! The real `helm` rendering the chart in `deploy/helm/kfp-event-bridge`: every binary named in
//! `KFP_TEST_HELM` (space-separated paths; `scripts/test.sh` installs Helm 3 and Helm 4 and sets
//! it), else `helm` on the `PATH`.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RELEASE: &str = "kfp-event-bridge";
pub const NAMESPACE: &str = "kubeflow";

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/kfp-event-bridge")
}

/// The values files of the chart's examples (`ci/*.yaml`), sorted.
pub fn ci_values() -> Vec<PathBuf> {
    let dir = chart_dir().join("ci");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "chart examples missing: {files:?}");
    files
}

/// The helm binaries to test with, each with the version it reports.
pub fn helms() -> Vec<(PathBuf, String)> {
    let named = std::env::var("KFP_TEST_HELM").unwrap_or_else(|_| "helm".into());
    let helms: Vec<(PathBuf, String)> = named
        .split_whitespace()
        .map(|path| {
            let path = PathBuf::from(path);
            let out = Command::new(&path)
                .args(["version", "--short"])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; scripts/test.sh installs Helm 3 and 4 and names them in \
                         KFP_TEST_HELM",
                        path.display()
                    )
                });
            assert!(out.status.success(), "{} version failed", path.display());
            (path, String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .collect();
    assert!(!helms.is_empty(), "KFP_TEST_HELM names no helm binary");
    helms
}

/// `helm ARGS` with its own (empty) configuration, cache and data directories: nothing of the
/// user's repositories or plugins, no network.
pub fn helm(helm: &Path, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("kfp-event-bridge-helm-{}", std::process::id()));
    Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", helm.display()))
}

/// The chart rendered (`helm template`) with these values files and extra arguments (`--set …`),
/// as its objects; the error output when helm refuses.
pub fn render(helm_bin: &Path, values: &[&Path], extra: &[&str]) -> Result<Vec<Value>, String> {
    render_as(helm_bin, RELEASE, values, extra)
}

/// As `render`, for a release of another name.
pub fn render_as(
    helm_bin: &Path,
    release: &str,
    values: &[&Path],
    extra: &[&str],
) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        NAMESPACE,
    ];
    let values: Vec<String> = values.iter().map(|p| p.display().to_string()).collect();
    for v in &values {
        args.extend(["--values", v.as_str()]);
    }
    args.extend(extra);
    let out = helm(helm_bin, &args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(documents(&String::from_utf8(out.stdout).expect("utf-8")))
}

/// Every non-empty document of a multi-document YAML stream.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [one] => one,
        other => panic!("{} objects of kind {kind}, not one", other.len()),
    }
}

/// The bridge's container of a Deployment.
pub fn bridge_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "bridge")
        .expect("the bridge container")
}

/// The value of a container's environment variable, when it has one.
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// `(group, resource, verb)` of every rule of a Role or ClusterRole.
pub fn grants(role: &Value) -> std::collections::BTreeSet<(String, String, String)> {
    let list = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .expect("list")
            .iter()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    let mut out = std::collections::BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for verb in list(&rule["verbs"]) {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "no wildcards: {rule:?}"
                    );
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}
