//! The Helm chart's Deployment runs: the binary started with exactly the arguments, environment
//! and config file the chart renders (Helm 3 and Helm 4; the pod's mounts mapped to folders of
//! the test), against the fake API server — two replicas' worth of settings (leader election, the
//! ConfigMap checkpoint in the release's namespace), a file sink from the `sinks:` list. It
//! syncs, becomes ready, publishes every run, writes its checkpoint shards and its Lease where
//! the chart's RBAC says, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;

use fake_apiserver::Kind;
use support::bridge::{BIN, Scratch, admin_addr, readyz_becomes, spawn_logged, stderr, wait};
use support::helm::{self, NAMESPACE, RELEASE};
use support::live::{Cluster, RETENTION, count_lines, many_runs, settle, sigterm, wait_synced};

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_deployment_runs_the_bridge() {
    for (bin, version) in helm::helms() {
        let scratch = Scratch::new("chart-run");
        let cluster = Cluster::start(&scratch).await;
        let out = scratch.path("events.jsonl");
        let sinks = format!(
            r#"sinks=[{{"uri":"file:{}","name":"events"}}]"#,
            out.display()
        );
        let objects = helm::render(
            &bin,
            &[],
            &[
                "--set",
                "replicaCount=2",
                "--set",
                &format!("watch.retention={RETENTION}"),
                "--set",
                "checkpoint.interval=200ms",
                "--set",
                "links.kfpUi=https://kubeflow.example.com/pipeline",
                "--set-json",
                &sinks,
            ],
        )
        .unwrap_or_else(|e| panic!("helm {version}: {e}"));
        let deployment = helm::one(&objects, "Deployment");
        let container = helm::bridge_container(deployment);

        // The config file, where the pod mounts it.
        let config = helm::of_kind(&objects, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == RELEASE)
            .expect("config ConfigMap");
        let etc = scratch.path("etc-kfp-event-bridge");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("config.yaml"),
            config["data"]["config.yaml"].as_str().unwrap(),
        )
        .unwrap();

        let mut command = Command::new(BIN);
        for arg in container["args"].as_sequence().unwrap() {
            command.arg(arg.as_str().unwrap());
        }
        command.env_clear();
        for entry in container["env"].as_sequence().unwrap() {
            let name = entry["name"].as_str().unwrap();
            let value = match (name, entry["value"].as_str()) {
                // The downward API's pod name.
                ("POD_NAME", None) => "kfp-event-bridge-7d9f-abcde".to_owned(),
                // Tests run side by side: no fixed admin port.
                ("KFP_BRIDGE_ADMIN_ADDR", Some(addr)) => {
                    assert_eq!(addr, "0.0.0.0:8080");
                    "127.0.0.1:0".to_owned()
                }
                ("KFP_BRIDGE_CONFIG", Some(path)) => {
                    assert_eq!(path, "/etc/kfp-event-bridge/config.yaml");
                    etc.join("config.yaml").display().to_string()
                }
                (_, Some(value)) => value.to_owned(),
                (_, None) => panic!("{name}: only POD_NAME comes from the downward API"),
            };
            command.env(name, value);
        }
        // In the pod, the service account; here, the fake.
        command.env("KFP_BRIDGE_KUBECONFIG", &cluster.kubeconfig);
        let mut bridge = spawn_logged(command.stdout(Stdio::null()));

        wait_synced(&mut bridge, Duration::from_secs(30)).await;
        let addr = admin_addr(&mut bridge).await;
        let lines = many_runs(1);
        cluster.feed(&lines);
        let published = settle(&out, 1, Duration::from_secs(3), Duration::from_secs(60)).await;
        assert!(published > 50, "helm {version}: {published} events");
        readyz_becomes(&addr, 200, "", Duration::from_secs(30)).await;

        // State where the chart's RBAC grants it: the Lease and the checkpoint's objects
        // (journal slots first) in the release's namespace, by the chart's names.
        assert!(
            cluster.api.get(Kind::Lease, NAMESPACE, RELEASE).is_some(),
            "helm {version}: no Lease {NAMESPACE}/{RELEASE}: {}",
            stderr(&mut bridge)
        );
        let objects =
            kfp_event_bridge::checkpoint::object_names(&format!("{RELEASE}-checkpoint"), 32)
                .iter()
                .filter(|name| cluster.api.get(Kind::ConfigMap, NAMESPACE, name).is_some())
                .count();
        assert!(objects > 0, "helm {version}: no checkpoint object written");

        sigterm(&bridge);
        let status = wait(&mut bridge, Duration::from_secs(30)).await;
        assert!(status.success(), "helm {version}: {}", stderr(&mut bridge));
        assert_eq!(count_lines(&out), published);
        // The chart's links setting reaches the events.
        let events = support::bridge::read_events(&out);
        assert!(
            events
                .iter()
                .all(|e| e["data"]["RunUrl"].as_str().is_some_and(
                    |u| u.starts_with("https://kubeflow.example.com/pipeline/#/runs/details/")
                ))
        );
    }
}
