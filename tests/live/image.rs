//! The image `scripts/image.sh build` makes: its config and files against what the Dockerfile
//! declares, the archives and the SBOM beside it, and the binary inside it run with runc as
//! 65532 on a read-only root (`--version`, every bundled recording replayed, `run` against the
//! fake apiserver until SIGTERM). Ignored by default: they need root, umoci, skopeo, runc and a
//! built image, named by `KFP_TEST_IMAGE=LAYOUT:TAG` (default `.state/image/oci:VERSION`).

use crate::support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use support::bridge::{BIN, Scratch, replayed, spawn_logged, stderr, wait};
use support::live::{Cluster, RETENTION, id_counts, many_runs, settle, write_recording};

/// The Dockerfile's runtime base, and what the image inherits from it: `scripts/image.sh` sets
/// the same by hand, so a new base means changing both.
const BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";
const BASE_ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];
const BASE_WORKDIR: &str = "/home/nonroot";
const NONROOT: u32 = 65532;
const RECORDINGS: &str = "/usr/share/kfp-event-bridge/recordings";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The OCI layout and tag under test. A missing image fails the test: it never skips.
struct Image {
    layout: PathBuf,
    tag: String,
}

impl Image {
    fn under_test() -> Self {
        let spec = std::env::var("KFP_TEST_IMAGE").unwrap_or_else(|_| {
            format!(
                "{}:{}",
                repo().join(".state/image/oci").display(),
                env!("CARGO_PKG_VERSION")
            )
        });
        let (layout, tag) = spec
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("KFP_TEST_IMAGE={spec}: want LAYOUT:TAG"));
        let image = Self {
            layout: PathBuf::from(layout),
            tag: tag.to_owned(),
        };
        let index = std::fs::read_to_string(image.layout.join("index.json")).unwrap_or_else(|e| {
            panic!("image {spec}: {e}; build it with scripts/image.sh build (as root)")
        });
        let index: Value = serde_json::from_str(&index).expect("index.json");
        let tags: Vec<&str> = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
            .collect();
        assert!(
            tags.contains(&tag),
            "image {spec}: no tag {tag} (has {tags:?})"
        );
        image
    }

    fn reference(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// Beside the layout: the archives and the SBOM `scripts/image.sh build` writes.
    fn beside(&self, name: &str) -> PathBuf {
        let path = self.layout.parent().expect("layout's folder").join(name);
        assert!(
            path.exists(),
            "{} missing beside the layout",
            path.display()
        );
        path
    }

    /// The image's files, unpacked with umoci into `dir/bundle` with the runtime config umoci
    /// derives from the image config (user, entrypoint, env, working directory).
    fn unpack(&self, dir: &Path) -> PathBuf {
        let bundle = dir.join("bundle");
        ok(Command::new("umoci")
            .args(["unpack", "--image", &self.reference()["oci:".len()..]])
            .arg(&bundle));
        bundle
    }
}

/// Runs a tool to the end; its output, or a panic with its standard error.
fn ok(command: &mut Command) -> Output {
    let name = format!("{command:?}");
    let out = command.output().unwrap_or_else(|e| {
        panic!("{name}: {e} (scripts/image.sh tools installs umoci, skopeo and runc)")
    });
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn skopeo_config(reference: &str) -> Value {
    json_of(&ok(
        Command::new("skopeo").args(["inspect", "--config", reference])
    ))
}

fn git(args: &[&str]) -> String {
    let out = ok(Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .env("TZ", "UTC"));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// What the Dockerfile's last stage declares, with `ARG`s substituted.
#[derive(Debug, Default)]
struct Declared {
    from: String,
    args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    env: Vec<String>,
    user: String,
    exposed: BTreeSet<String>,
    entrypoint: Vec<String>,
    /// `COPY --from=build` lines: (source relative to the repository, destination).
    copies: Vec<(PathBuf, String)>,
}

/// Splits `a="b c" d=e` on blanks outside double quotes, dropping the quotes.
fn words(text: &str) -> Vec<String> {
    let (mut out, mut word, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    args.iter().fold(text.to_owned(), |text, (name, value)| {
        text.replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value)
    })
}

/// A Dockerfile's instructions (continuations joined, comments dropped), split into stages.
fn stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            line.push_str(start);
            line.push(' ');
            continue;
        }
        line.push_str(trimmed);
        let (instruction, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("FROM first")
            .push((instruction, rest.trim().to_owned()));
        line.clear();
    }
    stages
}

/// The Dockerfile's last stage. `build_args` are what the build passes (`--build-arg`).
fn declared(build_args: &[(&str, &str)]) -> Declared {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let stages = stages(&text);
    // Where each earlier stage works (`COPY --from` sources are in its file system).
    let workdirs: BTreeMap<String, String> = stages
        .iter()
        .filter_map(|stage| {
            let name = words(&stage[0].1).get(2).cloned()?;
            let workdir = stage.iter().rev().find(|(i, _)| i == "WORKDIR")?.1.clone();
            Some((name, workdir))
        })
        .collect();
    let mut d = Declared::default();
    for (instruction, rest) in stages.last().expect("a stage") {
        match instruction.as_str() {
            "FROM" => d.from = words(rest)[0].clone(),
            "ARG" => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                let given = build_args.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                d.args
                    .insert(name.to_owned(), given.unwrap_or(default).to_owned());
            }
            "LABEL" => {
                for word in words(rest) {
                    let (k, v) = word.split_once('=').expect("LABEL key=value");
                    d.labels.insert(k.to_owned(), substitute(v, &d.args));
                }
            }
            "ENV" => {
                for word in words(rest) {
                    assert!(word.contains('='), "ENV {word}: use the key=value form");
                    d.env.push(substitute(&word, &d.args));
                }
            }
            "USER" => d.user.clone_from(rest),
            "EXPOSE" => {
                for port in rest.split_whitespace() {
                    d.exposed.insert(if port.contains('/') {
                        port.to_owned()
                    } else {
                        format!("{port}/tcp")
                    });
                }
            }
            "ENTRYPOINT" => {
                d.entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT in the JSON form");
            }
            "COPY" => {
                let w = words(rest);
                let from = w[0].strip_prefix("--from=").expect("COPY --from=STAGE");
                let root = workdirs
                    .get(from)
                    .expect("COPY from a stage with a WORKDIR");
                let source = Path::new(&w[1])
                    .strip_prefix(root)
                    .expect("COPY from the build stage's WORKDIR");
                d.copies.push((source.to_owned(), w[2].clone()));
            }
            other => panic!(
                "Dockerfile: {other} in the runtime stage, which this test and scripts/image.sh do not know"
            ),
        }
    }
    d
}

/// Every file and folder under `dir`, as relative paths.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            out.insert(path.strip_prefix(dir).expect("under dir").to_owned());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    out
}

/// The entrypoint, user, env, ports, working directory and labels are what the Dockerfile
/// declares (with what it inherits from its base); every `COPY` is in the image with the same
/// bytes; times are the commit's; the archives hold the same config.
#[test]
#[ignore = "needs an image: scripts/image.sh build, then KFP_TEST_IMAGE=LAYOUT:TAG"]
fn the_image_config_is_what_the_dockerfile_declares() {
    let image = Image::under_test();
    let revision = git(&["rev-parse", "HEAD"]);
    let d = declared(&[("REVISION", &revision)]);
    assert_eq!(
        d.from, BASE,
        "the base changed: change scripts/image.sh too"
    );
    assert_eq!(
        d.args.get("VERSION").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "the Dockerfile's ARG VERSION is not the crate's version"
    );
    assert_eq!(
        d.labels
            .get("org.opencontainers.image.licenses")
            .map(String::as_str),
        Some(env!("CARGO_PKG_LICENSE"))
    );

    let config = skopeo_config(&image.reference());
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(d.entrypoint), "entrypoint");
    assert!(c["Cmd"].is_null(), "an ENTRYPOINT resets the base's CMD");
    assert_eq!(c["User"], json!(d.user), "user");
    let mut env: Vec<String> = BASE_ENV.iter().map(|e| (*e).to_owned()).collect();
    env.extend(d.env.iter().cloned());
    assert_eq!(
        c["Env"],
        json!(env),
        "env: the base's, then the Dockerfile's"
    );
    let exposed: BTreeSet<String> = c["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(exposed, d.exposed, "exposed ports");
    assert_eq!(c["WorkingDir"], json!(BASE_WORKDIR), "working directory");
    assert_eq!(
        c["Labels"],
        json!(d.labels),
        "labels (an image of another commit? scripts/image.sh build)"
    );
    assert_eq!(
        (&config["os"], &config["architecture"]),
        (&json!("linux"), &json!("amd64"))
    );

    // Reproducible: every time is the commit's (SOURCE_DATE_EPOCH's default).
    let committed = git(&[
        "log",
        "-1",
        "--format=%cd",
        "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
    ]);
    assert_eq!(
        config["created"],
        json!(committed),
        "created (an image of another commit? scripts/image.sh build)"
    );
    for entry in config["history"].as_array().expect("history") {
        assert_eq!(entry["created"], json!(committed), "history {entry}");
    }

    let scratch = Scratch::new("image-config");
    let rootfs = image.unpack(&scratch.0).join("rootfs");
    for (source, destination) in &d.copies {
        let (host, inside) = (repo().join(source), rootfs.join(&destination[1..]));
        assert!(host.exists(), "{}: build it first", host.display());
        let pairs: Vec<(PathBuf, PathBuf)> = if host.is_dir() {
            assert_eq!(tree(&host), tree(&inside), "{destination}: other files");
            tree(&host)
                .into_iter()
                .filter(|f| host.join(f).is_file())
                .map(|f| (host.join(&f), inside.join(&f)))
                .collect()
        } else {
            vec![(host, inside)]
        };
        for (a, b) in pairs {
            assert!(
                std::fs::read(&a).expect("host file") == std::fs::read(&b).expect("image file"),
                "{} differs from {} in the image",
                a.display(),
                b.display()
            );
        }
    }

    for archive in [
        "oci-archive:kfp-event-bridge.oci.tar",
        "docker-archive:kfp-event-bridge.docker.tar",
    ] {
        let (transport, name) = archive.split_once(':').expect("transport:file");
        let path = image.beside(name);
        let inside = skopeo_config(&format!("{transport}:{}", path.display()));
        assert_eq!(inside["config"], config["config"], "{name}: another config");
        assert_eq!(inside["rootfs"], config["rootfs"], "{name}: other layers");
    }
}

/// The CycloneDX SBOM beside the image names the bridge at its version and every crate that
/// `cargo tree` says the binary is built from.
#[test]
#[ignore = "needs an image: scripts/image.sh build, then KFP_TEST_IMAGE=LAYOUT:TAG"]
fn the_sbom_lists_every_crate_of_the_binary() {
    let image = Image::under_test();
    let sbom: Value = serde_json::from_slice(
        &std::fs::read(image.beside("kfp-event-bridge.cdx.json")).expect("SBOM"),
    )
    .expect("SBOM JSON");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let component = &sbom["metadata"]["component"];
    assert_eq!(
        (&component["name"], &component["version"]),
        (
            &json!("kfp-event-bridge"),
            &json!(env!("CARGO_PKG_VERSION"))
        )
    );
    let listed: BTreeSet<String> = sbom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            format!(
                "{} v{}",
                c["name"].as_str().expect("name"),
                c["version"].as_str().expect("version")
            )
        })
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = ok(Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "--package", "kfp-event-bridge"]));
    let built: BTreeSet<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            l.split(" (")
                .next()
                .unwrap_or(l)
                .trim_end_matches(" (*)")
                .to_owned()
        })
        .filter(|l| !l.is_empty() && !l.starts_with("kfp-event-bridge "))
        .collect();
    assert!(built.len() > 100, "cargo tree: {built:?}");
    let missing: Vec<&String> = built.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "crates of the binary not in the SBOM: {missing:?}"
    );
}

/// Which network a container gets.
#[derive(Clone, Copy)]
enum Network {
    /// A namespace of its own: loopback only.
    Own,
    /// The test's own, to reach the fake apiserver on its loopback and be reached there: the
    /// test runs in a network namespace that has only loopback (`scripts/test.sh` runs it under
    /// `nsenter --net`; `only_loopback` checks).
    Host,
}

/// The network interfaces this process sees are loopback only: a container sharing them reaches
/// nothing beyond it.
fn only_loopback() {
    // This process's network namespace's interfaces (/sys/class/net shows the mounter's).
    let interfaces: BTreeSet<String> = std::fs::read_to_string("/proc/self/net/dev")
        .expect("/proc/self/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
        .collect();
    assert_eq!(
        interfaces,
        BTreeSet::from(["lo".to_owned()]),
        "run this test in a network namespace with only loopback, e.g. \
         ip netns add t && ip netns exec t ip link set lo up && nsenter --net=/run/netns/t cargo test …"
    );
}

/// A runc container of the image, deleted (killed if need be) when dropped. The bundle keeps
/// the user, env and working directory umoci derived from the image config; the root file
/// system is made read-only, every capability dropped (as the Deployment does), and the
/// entrypoint given `args`.
struct Container {
    bundle: PathBuf,
    state: PathBuf,
    name: String,
}

impl Container {
    fn new(image: &Image, scratch: &Scratch, network: Network, mounts: &[Value]) -> Self {
        assert!(
            std::fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .any(|l| l.starts_with("Uid:\t0\t")),
            "runc needs root"
        );
        let bundle = image.unpack(&scratch.0);
        let path = bundle.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("JSON");
        let process = &mut config["process"];
        assert_eq!(
            (&process["user"]["uid"], &process["user"]["gid"]),
            (&json!(NONROOT), &json!(NONROOT)),
            "the image's user"
        );
        process["terminal"] = json!(false);
        let env = process["env"].as_array_mut().expect("env");
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with("TERM=")));
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            process["capabilities"][set] = json!([]);
        }
        config["root"]["readonly"] = json!(true);
        config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .extend(mounts.iter().cloned());
        if let Network::Host = network {
            config["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces")
                .retain(|n| n["type"] != "network");
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("write");
        Self {
            bundle,
            state: scratch.path("runc"),
            name: format!(
                "kfp-image-test-{}-{}",
                std::process::id(),
                scratch.0.file_name().expect("name").to_string_lossy()
            ),
        }
    }

    fn runc(&self) -> Command {
        let mut command = Command::new("runc");
        command.arg("--root").arg(&self.state);
        command
    }

    /// `runc run` of the entrypoint with `args`, in the background, standard output to `stdout`
    /// and standard error to a file (`stderr` reads it).
    fn start(&self, args: &[&str], stdout: Stdio) -> Child {
        let path = self.bundle.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("JSON");
        let process_args = config["process"]["args"].as_array_mut().expect("args");
        process_args.truncate(1);
        process_args.extend(args.iter().map(|a| json!(a)));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("write");
        spawn_logged(
            self.runc()
                .args(["run", "--bundle"])
                .arg(&self.bundle)
                .arg(&self.name)
                .stdin(Stdio::null())
                .stdout(stdout),
        )
    }

    /// Runs the entrypoint with `args` to the end (at most a minute): exit status, standard
    /// output, standard error.
    fn run(&self, args: &[&str]) -> (ExitStatus, Vec<u8>, String) {
        let out = self.bundle.with_file_name("stdout");
        let mut child = self.start(args, std::fs::File::create(&out).expect("stdout").into());
        let t0 = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{args:?} still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status,
            std::fs::read(&out).expect("stdout"),
            stderr(&mut child),
        )
    }

    /// The host pid of the container's first process.
    fn pid(&self) -> u32 {
        let state = json_of(&ok(self.runc().args(["state", &self.name])));
        u32::try_from(state["pid"].as_u64().expect("pid")).expect("pid")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "--force", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// What the host's binary (this test build) does with `args`: exit status and standard output.
fn host(args: &[&str]) -> (ExitStatus, Vec<u8>) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .stderr(Stdio::null())
        .output()
        .expect("host binary");
    (out.status, out.stdout)
}

/// `--version` in a container of the image prints what the host's binary prints.
#[test]
#[ignore = "needs root, runc and an image: scripts/image.sh build, then KFP_TEST_IMAGE=LAYOUT:TAG"]
fn version_in_the_image_is_the_host_binarys() {
    let image = Image::under_test();
    let scratch = Scratch::new("image-version");
    let container = Container::new(&image, &scratch, Network::Own, &[]);
    let (status, stdout, log) = container.run(&["--version"]);
    assert!(status.success(), "{status}: {log}");
    let (host_status, want) = host(&["--version"]);
    assert!(host_status.success());
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&want)
    );
}

/// Every bundled recording, replayed in a container of the image from the copy the image
/// holds, prints byte for byte what the host's binary prints for the repository's copy.
#[test]
#[ignore = "needs root, runc and an image: scripts/image.sh build, then KFP_TEST_IMAGE=LAYOUT:TAG"]
fn replay_in_the_image_is_the_host_binarys_byte_for_byte() {
    let image = Image::under_test();
    let scratch = Scratch::new("image-replay");
    let container = Container::new(&image, &scratch, Network::Own, &[]);
    let recordings = support::all_recording_files();
    for recording in &recordings {
        let relative = recording
            .strip_prefix(support::recordings_dir())
            .expect("a bundled recording");
        let inside = format!("{RECORDINGS}/{}", relative.display());
        let (status, got, log) = container.run(&["--log", "warn", "replay", &inside]);
        assert!(status.success(), "{inside}: {status}: {log}");
        let (host_status, want) =
            host(&["--log", "warn", "replay", &recording.display().to_string()]);
        assert!(host_status.success());
        assert!(!want.is_empty(), "{}: no events", recording.display());
        assert!(
            got == want,
            "{inside}: the image's replay differs from the host's"
        );
    }
    eprintln!("{} recordings replayed alike", recordings.len());
}

/// `/readyz` of the admin server at `addr` answers 200; panics after `limit` or when the
/// container exits.
async fn ready(addr: &str, child: &mut Child, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(format!("http://{addr}/readyz")).await
            && response.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "the container exited ({status}) before ready: {}",
                stderr(child)
            );
        }
        assert!(
            t0.elapsed() < limit,
            "not ready after {limit:?}: {}",
            stderr(child)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `run` in a container of the image, in the host's network to reach the fake apiserver on
/// loopback, the kubeconfig mounted read-only and a data directory for the file sink and the
/// checkpoint: `/readyz` answers 200, the bundled runs come out as `replay` makes them, the
/// process is 65532's, the root file system refuses a write, and SIGTERM ends it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, runc and an image: scripts/image.sh build, then KFP_TEST_IMAGE=LAYOUT:TAG"]
async fn run_in_the_image_watches_the_fake_apiserver_and_stops_on_sigterm() {
    let image = Image::under_test();
    let scratch = Scratch::new("image-run");
    let cluster = Cluster::start(&scratch).await;
    let data = scratch.path("data");
    std::fs::create_dir(&data).expect("data dir");
    std::os::unix::fs::chown(&data, Some(NONROOT), Some(NONROOT)).expect("chown");
    let mounts = [
        json!({"destination": "/etc/kfp-event-bridge/kubeconfig", "type": "bind",
               "source": cluster.kubeconfig, "options": ["rbind", "ro"]}),
        json!({"destination": "/var/lib/kfp-event-bridge", "type": "bind",
               "source": data, "options": ["rbind", "rw"]}),
    ];
    only_loopback();
    let container = Container::new(&image, &scratch, Network::Host, &mounts);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = container.start(
        &[
            "run",
            "--kubeconfig",
            "/etc/kfp-event-bridge/kubeconfig",
            "--sink",
            "file:/var/lib/kfp-event-bridge/out.jsonl",
            "--checkpoint",
            "file:/var/lib/kfp-event-bridge/state",
            "--checkpoint-interval",
            "200ms",
            "--retention",
            RETENTION,
            "--admin-addr",
            &admin,
            "--log-format",
            "json",
        ],
        Stdio::null(),
    );
    ready(&admin, &mut child, Duration::from_secs(30)).await;

    let status = std::fs::read_to_string(format!("/proc/{}/status", container.pid()))
        .expect("the container's process");
    for id in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(id)).expect("id line");
        let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(ids, vec![NONROOT.to_string(); 4], "{line}");
    }
    // /tmp, not /: 65532 may write to /tmp on a writable root, so only a read-only root refuses.
    let probe = container
        .runc()
        .args(["exec", &container.name, "/usr/local/bin/kfp-event-bridge"])
        .args([
            "--log",
            "warn",
            "replay",
            &format!("{RECORDINGS}/kfp-v2-success.jsonl"),
        ])
        .args(["--sink", "file:/tmp/probe.jsonl"])
        .output()
        .expect("runc exec");
    let log = String::from_utf8_lossy(&probe.stderr);
    assert!(
        !probe.status.success() && log.contains("Read-only file system"),
        "a write to /tmp in the container: {}: {log}",
        probe.status
    );

    let lines = many_runs(1);
    let input = scratch.path("input.jsonl");
    write_recording(&input, &lines);
    let want: BTreeSet<String> = replayed(&input)
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    cluster.feed(&lines);
    let out = data.join("out.jsonl");
    let got = settle(
        &out,
        want.len(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let counts = id_counts(&out);
    assert_eq!(got, counts.len(), "an id was published twice");
    assert_eq!(
        counts.into_keys().collect::<BTreeSet<_>>(),
        want,
        "the image's run and the host's replay differ"
    );

    ok(container.runc().args(["kill", &container.name, "TERM"]));
    let status = wait(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}: {}", stderr(&mut child));
}
