//! HTTPS with a private CA and mutual TLS against a real rustls server on 127.0.0.1. The CA, the
//! server certificate (for IP 127.0.0.1) and the client certificate are made by the `openssl`
//! command for each run.

use cloudevents::{EventBuilder, EventBuilderV10};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sink_core::{Event, Sink, SinkError};
use sink_http::HttpSink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn make(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sink-http-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let pki = Pki { dir };
        let p = |n: &str| pki.path(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &pki.dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &p("ca.key"),
                    "-out",
                    &p("ca.pem"),
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test CA",
                ],
            ]
            .concat(),
        );
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            let key = p(&format!("{name}.key"));
            let pem = p(&format!("{name}.pem"));
            openssl(
                &pki.dir,
                &[
                    &["req", "-x509"][..],
                    &ec,
                    &[
                        "-keyout",
                        &key,
                        "-out",
                        &pem,
                        "-days",
                        "2",
                        "-subj",
                        &format!("/CN={name}"),
                        "-CA",
                        &p("ca.pem"),
                        "-CAkey",
                        &p("ca.key"),
                        "-addext",
                        ext,
                        "-addext",
                        "basicConstraints=critical,CA:FALSE",
                    ],
                ]
                .concat(),
            );
        }
        std::fs::write(p("other-ca.pem"), {
            let other = Pki {
                dir: pki.dir.join("other"),
            };
            std::fs::create_dir_all(&other.dir).expect("dir");
            openssl(
                &other.dir,
                &[
                    &["req", "-x509"][..],
                    &ec,
                    &[
                        "-keyout",
                        &other.path("ca.key"),
                        "-out",
                        &other.path("ca.pem"),
                        "-days",
                        "2",
                        "-subj",
                        "/CN=other CA",
                    ],
                ]
                .concat(),
            );
            std::fs::read(other.path("ca.pem")).expect("other CA")
        })
        .expect("write");
        pki
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS server requiring a client certificate from the test CA; answers 202 to each request
/// and counts the requests it read.
async fn server(pki: &Pki) -> (String, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
        roots.add(cert.expect("cert")).expect("add");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .expect("server cert")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://{addr}/events"), served)
}

fn event() -> Event {
    EventBuilderV10::new()
        .id("tls-1")
        .source("/test")
        .ty("org.kubeflow.pipelines.run.started")
        .build()
        .expect("event")
}

async fn deliver(sink: &HttpSink) -> Result<(), SinkError> {
    sink.publish(&event()).await?.await
}

fn options(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test]
async fn private_ca_and_client_certificates() {
    let pki = Pki::make("mtls");
    let (url, served) = server(&pki).await;
    let mtls = options(&[
        ("ca_file", pki.path("ca.pem")),
        ("cert_file", pki.path("client.pem")),
        ("key_file", pki.path("client.key")),
    ]);
    let sink = HttpSink::open(&url, None, Some(&mtls), None).expect("opens");
    deliver(&sink).await.expect("delivered over mutual TLS");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // The CA can also come from Knative's K_CA_CERTS (PEM content).
    let ca = std::fs::read_to_string(pki.path("ca.pem")).expect("ca");
    let client_only = options(&[
        ("cert_file", pki.path("client.pem")),
        ("key_file", pki.path("client.key")),
    ]);
    let sink = HttpSink::open(&url, None, Some(&client_only), Some(&ca)).expect("opens");
    deliver(&sink).await.expect("delivered with K_CA_CERTS");
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // A server certificate from an unknown CA is refused (and retried: certificates get fixed).
    let wrong_ca = options(&[
        ("ca_file", pki.path("other-ca.pem")),
        ("cert_file", pki.path("client.pem")),
        ("key_file", pki.path("client.key")),
    ]);
    let sink = HttpSink::open(&url, None, Some(&wrong_ca), None).expect("opens");
    let err = deliver(&sink).await.expect_err("untrusted server");
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Without a client certificate the server ends the handshake.
    let no_client = options(&[("ca_file", pki.path("ca.pem"))]);
    let sink = HttpSink::open(&url, None, Some(&no_client), None).expect("opens");
    assert!(deliver(&sink).await.is_err());
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "nothing served without a client certificate"
    );

    // Files that are not PEM are configuration errors at start.
    let bad = options(&[("ca_file", pki.path("client.key"))]);
    let err = HttpSink::open(&url, None, Some(&bad), None)
        .err()
        .expect("refused");
    assert_eq!(err.class(), "config");
    assert!(err.to_string().contains("ca_file"), "{err}");
}
