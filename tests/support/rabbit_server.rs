//! A real RabbitMQ for a test: its own Erlang port mapper, node name, ports, data directory and
//! pid file, all on loopback; stopped (process group and all) when dropped. `scripts/test.sh`
//! installs the server; without it the test fails and says how to get it.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct RabbitServer {
    pub port: u16,
    /// The TLS listener's port ([`RabbitServer::start_tls`]; 0 without).
    pub tls_port: u16,
    pub dir: PathBuf,
    tag: String,
    epmd_port: u16,
    dist_port: u16,
    epmd: Option<Child>,
    server: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A TLS listener's PEM files: the CA that signs client certificates, the server's certificate
/// and key.
pub struct Tls<'a> {
    pub ca: &'a std::path::Path,
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
}

impl RabbitServer {
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, None)
    }

    /// With a TLS listener too (`tls_port`) that demands a client certificate signed by `ca`.
    pub fn start_tls(tag: &str, tls: Tls<'_>) -> Self {
        Self::start_with(tag, Some(tls))
    }

    fn start_with(tag: &str, tls: Option<Tls<'_>>) -> Self {
        let dir = std::env::temp_dir().join(format!("kfp-rabbit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).expect("dir");
        let mut server = Self {
            port: free_port(),
            tls_port: if tls.is_some() { free_port() } else { 0 },
            dir,
            tag: tag.to_owned(),
            epmd_port: free_port(),
            dist_port: free_port(),
            epmd: None,
            server: None,
        };
        let mut config = format!(
            "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n",
            server.port
        );
        if let Some(tls) = &tls {
            config.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{}\nssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
                server.tls_port,
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ));
        }
        std::fs::write(server.dir.join("rabbitmq.conf"), config).expect("config");
        std::fs::write(server.dir.join("enabled_plugins"), "[].\n").expect("plugins");
        let epmd = Command::new("epmd")
            .args([
                "-address",
                "127.0.0.1",
                "-port",
                &server.epmd_port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start epmd ({e}); run scripts/test.sh"));
        server.epmd = Some(epmd);
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts (again) with the same ports and data.
    pub fn resume(&mut self) {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut command = Command::new(SERVER);
        command
            .env("HOME", d("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("rabbit-{}@localhost", self.tag),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("rabbit.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {SERVER} ({e}); run scripts/test.sh, or apt-get install rabbitmq-server")
        });
        self.server = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || (self.tls_port != 0 && TcpStream::connect(("127.0.0.1", self.tls_port)).is_err())
        {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "RabbitMQ did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker (data stays for `resume`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
