//! The Helm chart, rendered by the real `helm` (Helm 3 and Helm 4): it lints strictly, every
//! example renders what it says, bad values are refused with a message naming them, the values
//! table is `values.yaml`, the monitoring files are `deploy/monitoring`'s, and the default render
//! is the kustomize `cluster` overlay in substance.

use crate::support::helm::{
    NAMESPACE, RELEASE, bridge_container, chart_dir, ci_values, env_value, grants, helm, helms,
    of_kind, one, render, render_as,
};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn ci(name: &str) -> PathBuf {
    chart_dir().join("ci").join(format!("{name}-values.yaml"))
}

fn deployment(objects: &[Value]) -> &Value {
    one(objects, "Deployment")
}

fn pod_spec(objects: &[Value]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]
}

/// The rendered config file of the bridge, read by the bridge's own loader and checked as `run`
/// checks it (every sink parsed, filters and templates included).
fn check_config_file(objects: &[Value], scratch: &Path) -> serde_yaml::Value {
    let map = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == RELEASE)
        .expect("the config ConfigMap");
    let text = map["data"]["config.yaml"].as_str().expect("config.yaml");
    let path = scratch.join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    let file = kfp_event_bridge::config::ConfigFile::load(&path)
        .unwrap_or_else(|e| panic!("the bridge refuses the rendered config file: {e}\n{text}"));
    file.sink_specs(&path)
        .unwrap_or_else(|e| panic!("the bridge refuses a rendered sink: {e}\n{text}"));
    serde_yaml::from_str(text).expect("YAML")
}

#[test]
fn the_chart_lints_strictly_with_every_example() {
    let chart = chart_dir();
    for (bin, version) in helms() {
        for values in ci_values() {
            let out = helm(
                &bin,
                &[
                    "lint",
                    "--strict",
                    chart.to_str().unwrap(),
                    "--values",
                    values.to_str().unwrap(),
                ],
            );
            assert!(
                out.status.success(),
                "helm {version} lint --strict with {}:\n{}{}",
                values.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn every_example_renders_what_it_says() {
    let scratch = std::env::temp_dir().join(format!("kfp-chart-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for (bin, version) in helms() {
        let render = |name: &str| {
            render(&bin, &[&ci(name)], &[])
                .unwrap_or_else(|e| panic!("helm {version}, {name}: {e}"))
        };
        for values in ci_values() {
            let objects = render(
                values
                    .file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim_end_matches("-values"),
            );
            check_config_file(&objects, &scratch);
            let pod = pod_spec(&objects);
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{values:?}");
            let bridge = bridge_container(deployment(&objects));
            assert_eq!(bridge["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(bridge["args"][0], "run");
            for object in &objects {
                let ns = &object["metadata"]["namespace"];
                let kind = object["kind"].as_str().unwrap();
                assert!(
                    !ns.is_null() || matches!(kind, "ClusterRole" | "ClusterRoleBinding"),
                    "{kind} without a namespace"
                );
            }
        }

        // The defaults: all namespaces, one replica, stdout, nothing optional.
        let objects = render("defaults");
        let deploy = deployment(&objects);
        let bridge = bridge_container(deploy);
        assert_eq!(deploy["spec"]["replicas"], 1);
        assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
        assert_eq!(env_value(bridge, "KFP_BRIDGE_NAMESPACES"), None);
        assert_eq!(env_value(bridge, "KFP_BRIDGE_LEADER_ELECTION"), None);
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_CHECKPOINT"),
            Some("configmap:kubeflow/kfp-event-bridge-checkpoint?shards=32")
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_CATCH_UP_BOUND"),
            Some("100000"),
            "as the bridge reads an integer"
        );
        assert_eq!(bridge["image"], "kfp-event-bridge:0.1.0");
        one(&objects, "ClusterRole");
        for kind in [
            "PodDisruptionBudget",
            "SinkBinding",
            "Trigger",
            "ServiceMonitor",
            "PrometheusRule",
        ] {
            assert!(of_kind(&objects, kind).is_empty(), "{kind} by default");
        }
        let config = check_config_file(&objects, &scratch);
        assert_eq!(config["sinks"], Value::Sequence(vec![]));

        // Two namespaces: a Role and a RoleBinding in each, bound to the release's account.
        let objects = render("namespaced");
        assert!(of_kind(&objects, "ClusterRole").is_empty());
        let watch: Vec<_> = of_kind(&objects, "Role")
            .into_iter()
            .filter(|r| r["metadata"]["name"] == "kfp-event-bridge-watch")
            .map(|r| r["metadata"]["namespace"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(watch, ["team-a", "team-b"]);
        for binding in of_kind(&objects, "RoleBinding") {
            assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
        }
        let bridge = bridge_container(deployment(&objects));
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_NAMESPACES"),
            Some("team-a,team-b")
        );
        let secrets = pod_spec(&objects)["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "secrets")
            .unwrap();
        assert_eq!(secrets["secret"]["secretName"], "kafka-credentials");
        assert!(
            secrets["secret"]["optional"].is_null(),
            "a named Secret must exist"
        );

        // HA: leader election, PDB, spreading, rolling updates, the digest.
        let objects = render("ha");
        let deploy = deployment(&objects);
        let bridge = bridge_container(deploy);
        assert_eq!(deploy["spec"]["replicas"], 2);
        assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(
            deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            0
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_LEADER_ELECTION"),
            Some("true")
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_LEADER_ELECTION_NAME"),
            Some(RELEASE)
        );
        assert_eq!(
            one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"],
            1
        );
        let pod = pod_spec(&objects);
        assert!(!pod["affinity"]["podAntiAffinity"].is_null());
        assert_eq!(pod["priorityClassName"], "system-cluster-critical");
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            deploy["spec"]["template"]["metadata"]["annotations"]["example.com/team"],
            "platform"
        );
        assert!(
            bridge["image"]
                .as_str()
                .unwrap()
                .starts_with("registry.example.com/kfp-event-bridge@sha256:")
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_KFP_UI_URL"),
            Some("https://kubeflow.example.com/pipeline")
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_ARGO_UI_URL"),
            Some("https://argo.example.com")
        );
        let config = check_config_file(&objects, &scratch);
        assert_eq!(
            config["dead_letter"],
            "file:/var/lib/kfp-event-bridge/dead.jsonl"
        );
        assert_eq!(config["retry"]["max_attempts"], 20);

        // Knative: the SinkBinding names the Deployment; the Trigger is on the Broker.
        let objects = render("knative");
        let binding = one(&objects, "SinkBinding");
        assert_eq!(binding["spec"]["subject"]["name"], RELEASE);
        assert_eq!(binding["spec"]["sink"]["ref"]["kind"], "Broker");
        let trigger = one(&objects, "Trigger");
        assert_eq!(trigger["spec"]["broker"], "default");
        assert_eq!(
            trigger["spec"]["filter"]["attributes"]["type"],
            "org.kubeflow.pipelines.task.failed"
        );

        // Monitoring: the rules and the dashboard are deploy/monitoring's, unchanged.
        let objects = render("monitoring");
        let monitor = one(&objects, "ServiceMonitor");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
        let service = one(&objects, "Service");
        for (key, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .unwrap()
        {
            assert_eq!(&service["metadata"]["labels"][key], value);
        }
        let rules: Value = serde_yaml::from_str(
            &std::fs::read_to_string(repo("deploy/monitoring/alerts.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(one(&objects, "PrometheusRule")["spec"], rules);
        let dashboard = of_kind(&objects, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
            .expect("the dashboard ConfigMap, labelled for Grafana's sidecar");
        assert_eq!(
            dashboard["data"]["kfp-event-bridge.json"]
                .as_str()
                .unwrap()
                .trim_end(),
            std::fs::read_to_string(repo("deploy/monitoring/dashboard.json"))
                .unwrap()
                .trim_end()
        );

        // kfp-event-handler's subscriber ConfigMap, mounted as the subscriber directory.
        let objects = render("migration");
        let bridge = bridge_container(deployment(&objects));
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_SUBSCRIBERS_DIR"),
            Some("/subscribers")
        );
        assert_eq!(env_value(bridge, "KFP_BRIDGE_NAMESPACES"), Some(NAMESPACE));
        let subscribers = of_kind(&objects, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == "kfp-event-handler-config")
            .expect("the subscriber ConfigMap");
        assert!(subscribers["data"]["teams-notifier"].is_string());

        // The sidecar: a broker container beside the bridge, publishing to loopback.
        let objects = render("sidecar");
        let containers = pod_spec(&objects)["containers"].as_sequence().unwrap();
        assert_eq!(containers.len(), 2);
        let config = check_config_file(&objects, &scratch);
        assert!(
            config["sinks"][0]["uri"]
                .as_str()
                .unwrap()
                .starts_with("nats://127.0.0.1:4222/")
        );
    }
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn bad_values_are_refused_with_a_message_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "replicaCount=two"], "replicaCount"),
        (&["--set", "replicaCount=0"], "replicaCount"),
        (&["--set", "image.digest=latest"], "digest"),
        (&["--set", "watch.scope=everywhere"], "scope"),
        (&["--set", "checkpoint.kind=file"], "kind"),
        (&["--set", "shutdownTimeout=soon"], "shutdownTimeout"),
        (&["--set", "links.kfpUi=kubeflow.example.com"], "kfpUi"),
        (&["--set", "sinks[0].name=no-uri"], "uri"),
        (&["--set", "unknownValue=1"], "unknownValue"),
        (&["--set", "watch.namespaces={a}"], "watch.scope"),
        (
            &["--set-json", r#"sinks=[{"uri":"amqp://u:secret@h/x"}]"#],
            "sinks[0]: the uri holds a password",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"kafka://k:9092/t","name":"an","options":{"sasl.password":"x"}}]"#,
            ],
            "sinks[0] (an): option sasl.password holds a secret",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"https://h/x","options":{"token":"x"}}]"#,
            ],
            "option token holds a secret",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"kafka://k:9092/t?sasl.password=hunter2"}]"#,
            ],
            "parameter sasl.password holds a secret",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"nats://s3cr3t@nats:4222/kfp"}]"#,
            ],
            "NATS user or token",
        ),
        (
            &["--set-json", r#"sinks=[{"uri":"KAFKA://u:p@k:9092/t"}]"#],
            "the uri holds a password",
        ),
        (
            &["--set-json", r#"sinks=[{"uri":"https://h/x?token=abc"}]"#],
            "parameter token holds a secret",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"https://h/x","options":{"header":"Authorization: Bearer abc"}}]"#,
            ],
            "header \"Authorization\" holds a credential",
        ),
        (
            &[
                "--set-json",
                r#"sinks=[{"uri":"kafka://k/t","options":{"sasl.jaas.config":"x"}}]"#,
            ],
            "option sasl.jaas.config holds a secret",
        ),
        (
            &["--set", "deadLetter=amqp://u:pass@h/x"],
            "deadLetter: the uri holds a password",
        ),
        (
            &["--set", "serviceAccount.create=false"],
            "serviceAccount.name is empty",
        ),
        (
            &["--set", "env.KFP_BRIDGE_WATCH_EVENTS=false"],
            "env.KFP_BRIDGE_WATCH_EVENTS: the chart sets",
        ),
        (
            &[
                "--set-json",
                r#"extraEnv=[{"name":"KFP_BRIDGE_LOG","value":"debug"}]"#,
            ],
            "extraEnv: the chart sets KFP_BRIDGE_LOG",
        ),
        (&["--set", "watch.retention=5m"], "watch.retention"),
        (
            &["--set", "leaderElection.renewDeadline=20s"],
            "leaseDuration (15s) must be longer than renewDeadline (20s)",
        ),
        (
            &[
                "--set",
                "knative.sinkBinding.sink.kind=Service",
                "--set-json",
                r#"knative.triggers=[{"name":"t","subscriber":{"uri":"http://x"}}]"#,
            ],
            "name its broker",
        ),
        (
            &["--set", "monitoring.serviceMonitor.interval=30"],
            "interval",
        ),
        (&["--set", "fullnameOverride=Bridge_1"], "fullnameOverride"),
    ];
    for (bin, version) in helms() {
        for (args, expected) in cases {
            match render(&bin, &[], args) {
                Ok(_) => panic!("helm {version} accepted {args:?}"),
                Err(message) => assert!(
                    message.contains(expected),
                    "helm {version}, {args:?}: the message does not name {expected:?}: {message}"
                ),
            }
        }
        // And the secrets that belong in files pass, as does a user without a password.
        render(
            &bin,
            &[],
            &[
                "--set-json",
                r#"sinks=[{"uri":"kafka://k:9092/t","options":{"sasl.password_file":"/s/p"}},
                          {"uri":"amqp://bridge@rabbit:5672/%2f?exchange=kfp&password_file=/s/a"},
                          {"uri":"https://h/x","options":{"header":["X-Team: data"],"token_file":"/s/t"}}]"#,
            ],
        )
        .unwrap_or_else(|e| panic!("helm {version}: {e}"));
    }
}

/// `path → default` of every value of `values.yaml` (maps are walked; lists, empty maps and
/// scalars are values), each default as JSON.
fn value_defaults(value: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match value.as_mapping() {
        Some(map) if !map.is_empty() => {
            for (key, v) in map {
                let key = key.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                value_defaults(v, &path, out);
            }
        }
        _ => {
            let json: serde_json::Value =
                serde_json::to_value(value).expect("values are JSON values");
            out.insert(prefix.to_owned(), json.to_string());
        }
    }
}

#[test]
fn the_values_table_lists_every_value_with_its_default() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let mut expected = BTreeMap::new();
    value_defaults(&values, "", &mut expected);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let table: BTreeMap<String, String> = readme
        .lines()
        .skip_while(|l| *l != "## Values")
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), default.to_owned()))
        })
        .collect();
    assert_eq!(
        table, expected,
        "the chart README's Values table differs from values.yaml"
    );
    // The schema knows every top-level value (it refuses what it does not know).
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for key in values.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            schema["properties"].get(key).is_some(),
            "values.schema.json lacks {key}"
        );
    }
}

#[test]
fn the_charts_monitoring_files_are_deploy_monitorings() {
    for file in ["alerts.yaml", "dashboard.json"] {
        assert_eq!(
            std::fs::read(chart_dir().join("files").join(file)).unwrap(),
            std::fs::read(repo("deploy/monitoring").join(file)).unwrap(),
            "deploy/helm/kfp-event-bridge/files/{file} differs from deploy/monitoring/{file}: \
             copy it over (deploy/monitoring is the source)"
        );
    }
}

/// `kubectl kustomize DIR`, as objects.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", repo(dir).to_str().unwrap()])
        .output()
        .expect("kubectl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::helm::documents(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_default_render_is_the_cluster_overlay_in_substance() {
    let overlay = kustomize("deploy/overlays/cluster");
    let role = |objects: &[Value], kind: &str, suffix: &str| {
        grants(
            of_kind(objects, kind)
                .into_iter()
                .find(|r| r["metadata"]["name"].as_str().unwrap().ends_with(suffix))
                .unwrap_or_else(|| panic!("{kind} *{suffix}")),
        )
    };
    for (bin, version) in helms() {
        let chart = render(&bin, &[], &[]).unwrap_or_else(|e| panic!("helm {version}: {e}"));
        assert_eq!(
            role(&chart, "ClusterRole", "-watch"),
            role(&overlay, "ClusterRole", "-watch")
        );
        assert_eq!(
            role(&chart, "Role", "-state"),
            role(&overlay, "Role", "-state")
        );
        let (ours, theirs) = (pod_spec(&chart), pod_spec(&overlay));
        assert_eq!(ours["securityContext"], theirs["securityContext"]);
        let (ours_c, theirs_c) = (
            bridge_container(deployment(&chart)),
            bridge_container(deployment(&overlay)),
        );
        for field in [
            "securityContext",
            "args",
            "livenessProbe",
            "readinessProbe",
            "resources",
            "ports",
        ] {
            assert_eq!(ours_c[field], theirs_c[field], "helm {version}: {field}");
        }
        // The settings the overlay keeps in its ConfigMap (envFrom) are the chart's env, value
        // for value (the sinks aside: the overlay's are an example, the chart's are values).
        let settings = of_kind(&overlay, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == "kfp-event-bridge")
            .expect("the overlay's settings");
        for (key, value) in settings["data"].as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            if key == "KFP_BRIDGE_SINKS" {
                continue;
            }
            assert_eq!(
                env_value(ours_c, key),
                value.as_str(),
                "helm {version}: {key}"
            );
        }
        for name in ["POD_NAME", "KFP_BRIDGE_ADMIN_ADDR"] {
            let find = |c: &Value| {
                c["env"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == name)
                    .cloned()
            };
            assert_eq!(find(ours_c), find(theirs_c), "{name}");
        }
        let mount = |c: &Value| {
            c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "secrets")
                .map(|m| m["mountPath"].clone())
        };
        assert_eq!(mount(ours_c), mount(theirs_c));
        assert_eq!(
            deployment(&chart)["spec"]["strategy"],
            deployment(&overlay)["spec"]["strategy"]
        );
    }
}

/// Every binding names a role the chart renders, in its namespace, and binds the account the
/// Deployment runs as; the state rules reach the bridge's own objects only, by name.
#[test]
fn bindings_name_the_rendered_roles_and_the_state_rules_name_the_bridges_objects() {
    for (bin, version) in helms() {
        for values in ci_values() {
            let objects =
                render(&bin, &[&values], &[]).unwrap_or_else(|e| panic!("helm {version}: {e}"));
            let account = &pod_spec(&objects)["serviceAccountName"];
            for (binding_kind, role_kind) in [
                ("RoleBinding", "Role"),
                ("ClusterRoleBinding", "ClusterRole"),
            ] {
                for binding in of_kind(&objects, binding_kind) {
                    let role = &binding["roleRef"];
                    assert_eq!(role["kind"], role_kind);
                    assert!(
                        of_kind(&objects, role_kind).iter().any(|r| {
                            r["metadata"]["name"] == role["name"]
                                && r["metadata"]["namespace"] == binding["metadata"]["namespace"]
                        }),
                        "helm {version} {values:?}: {binding_kind} {:?} names no rendered role",
                        binding["metadata"]["name"]
                    );
                    assert_eq!(&binding["subjects"][0]["name"], account);
                    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
                }
            }
            let state = of_kind(&objects, "Role")
                .into_iter()
                .find(|r| r["metadata"]["name"].as_str().unwrap().ends_with("-state"))
                .expect("state Role");
            assert_eq!(state["metadata"]["namespace"], NAMESPACE);
            let bridge = bridge_container(deployment(&objects));
            let checkpoint = env_value(bridge, "KFP_BRIDGE_CHECKPOINT").unwrap();
            for rule in state["rules"].as_sequence().unwrap() {
                let verbs = rule["verbs"].as_sequence().unwrap();
                let names = rule["resourceNames"].as_sequence();
                if verbs.iter().any(|v| v == "get" || v == "update") {
                    let names: Vec<&str> = names
                        .expect("get and update name their objects")
                        .iter()
                        .map(|n| n.as_str().unwrap())
                        .collect();
                    if rule["resources"][0] == "configmaps" {
                        let base = checkpoint
                            .strip_prefix(&format!("configmap:{NAMESPACE}/"))
                            .unwrap()
                            .split('?')
                            .next()
                            .unwrap();
                        // Every object the bridge may write: shards, their parts, the journal.
                        let objects = kfp_event_bridge::checkpoint::object_names(base, 32);
                        assert_eq!(names, objects);
                    } else {
                        assert_eq!(names, [RELEASE], "the Lease");
                    }
                } else {
                    assert!(
                        names.is_none(),
                        "list and create cannot be limited to names"
                    );
                }
            }
        }
    }
}

/// A release name as long as Helm allows (53) still gives valid names: every object's name and
/// the checkpoint's label value (its name) fit in 63 characters, and the bridge takes the spec.
#[test]
fn a_long_release_name_gives_names_kubernetes_takes() {
    let release = "team-analytics-production-pipelines-events-exporter-x";
    assert_eq!(release.len(), 53);
    for (bin, version) in helms() {
        for values in ci_values() {
            let objects = render_as(&bin, release, &[&values], &[])
                .unwrap_or_else(|e| panic!("helm {version}: {e}"));
            for object in &objects {
                let name = object["metadata"]["name"].as_str().unwrap();
                assert!(
                    name.len() <= 63,
                    "{}: {name}",
                    object["kind"].as_str().unwrap()
                );
                for (key, value) in object["metadata"]["labels"].as_mapping().unwrap() {
                    let value = value.as_str().unwrap();
                    assert!(value.len() <= 63, "label {key:?}: {value}");
                }
            }
            let bridge = bridge_container(deployment(&objects));
            if let Some(checkpoint) = env_value(bridge, "KFP_BRIDGE_CHECKPOINT") {
                kfp_event_bridge::checkpoint::CheckpointSpec::parse(checkpoint)
                    .unwrap_or_else(|e| panic!("helm {version}: {e}"));
            }
        }
    }
}

/// What values a user writes come out as the bridge reads them: whole numbers without an
/// exponent, the chart's labels and annotations kept, the subscribers' checksum rolling the
/// pod, the ServiceMonitor keeping the metrics' own namespace label.
#[test]
fn values_come_out_as_the_bridge_and_kubernetes_read_them() {
    for (bin, version) in helms() {
        let objects = render(
            &bin,
            &[],
            &[
                "--set-json",
                r#"env={"KFP_BRIDGE_LANE_CAPACITY":10000000,"KFP_BRIDGE_RETRY_MULTIPLIER":1.5}"#,
                "--set-json",
                r#"podLabels={"app.kubernetes.io/name":"other","team":"a"}"#,
                "--set-json",
                r#"podAnnotations={"checksum/config":"x","example.com/a":"b"}"#,
            ],
        )
        .unwrap_or_else(|e| panic!("helm {version}: {e}"));
        let deploy = deployment(&objects);
        let bridge = bridge_container(deploy);
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_LANE_CAPACITY"),
            Some("10000000")
        );
        assert_eq!(
            env_value(bridge, "KFP_BRIDGE_RETRY_MULTIPLIER"),
            Some("1.5")
        );
        let meta = &deploy["spec"]["template"]["metadata"];
        assert_eq!(meta["labels"]["app.kubernetes.io/name"], "kfp-event-bridge");
        assert_eq!(meta["labels"]["team"], "a");
        assert_ne!(meta["annotations"]["checksum/config"], "x");
        assert_eq!(meta["annotations"]["example.com/a"], "b");
        assert_eq!(meta["annotations"]["prometheus.io/scrape"], "true");

        let subscribers = |url: &str| {
            let objects = render(
                &bin,
                &[&ci("migration")],
                &["--set", &format!("subscribers.create.teams-notifier={url}")],
            )
            .unwrap();
            deployment(&objects)["spec"]["template"]["metadata"]["annotations"]
                ["checksum/subscribers"]
                .clone()
        };
        assert!(subscribers("http://a").is_string());
        assert_ne!(subscribers("http://a"), subscribers("http://b"));

        let objects = render(&bin, &[&ci("monitoring")], &[]).unwrap();
        assert_eq!(
            one(&objects, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
            true
        );
        let annotations = &deployment(&objects)["spec"]["template"]["metadata"]["annotations"];
        assert!(
            annotations["prometheus.io/scrape"].is_null(),
            "scraped twice"
        );

        let objects = render(&bin, &[&ci("sidecar")], &[]).unwrap();
        let ports = one(&objects, "Service")["spec"]["ports"]
            .as_sequence()
            .unwrap();
        assert!(ports.iter().any(|p| p["port"] == 4222));
        let ingress = one(&objects, "NetworkPolicy")["spec"]["ingress"]
            .as_sequence()
            .unwrap();
        assert!(ingress.iter().any(|r| r["ports"][0]["port"] == 4222));
    }
}
