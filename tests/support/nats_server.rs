//! A real `nats-server` with JetStream for a test: loopback only, its own port, store directory
//! and pid file; stopped (and its files removed) when dropped. `scripts/test.sh` installs the
//! server; without it the test fails and says how to get it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    pub port: u16,
    pub dir: PathBuf,
    config: Option<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl NatsServer {
    /// Starts a server; `config` is extra nats-server configuration (e.g. `max_payload: 2000`).
    pub fn start(tag: &str, config: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("kfp-nats-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("store dir");
        let mut server = Self {
            port: free_port(),
            dir,
            config: config.map(str::to_owned),
            child: None,
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port with the same store.
    pub fn resume(&mut self) {
        let mut command = Command::new("nats-server");
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-n",
                "test",
            ])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-P")
            .arg(self.dir.join("nats.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("server.log")).expect("server log"));
        if let Some(config) = &self.config {
            let path = self.dir.join("extra.conf");
            std::fs::write(&path, config).expect("config");
            command.arg("-c").arg(path);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start nats-server ({e}); run scripts/test.sh, or apt-get install nats-server")
        });
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && t0.elapsed() < Duration::from_secs(10),
                "nats-server did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (the store stays for `resume`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates stream `name` capturing `subjects` through `client` (duplicate window 2 min).
pub async fn create_stream(
    client: async_nats::Client,
    name: &str,
    subjects: &[&str],
) -> async_nats::jetstream::stream::Stream {
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("stream created")
}
