//! The NATS sink against nats-servers that demand credentials: mutual TLS with a private CA plus
//! user/password in the URI or an NKey seed file; a token file; a `.creds` file (operator mode,
//! decentralised JWT auth). Wrong credentials and a missing client certificate are refused at
//! start, naming the sink, with no secret in the log. The PKI is made by the `openssl` command,
//! the operator, account and user JWTs by the test (NKeys signing, as `nsc` does), for each run.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::bridge::{BIN, Scratch, all_recordings, bridge, replayed, stderr, summaries, wait};
use support::nats_server::{NatsServer, create_stream};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
pub(crate) fn pki(dir: &Path) {
    let script = r#"
        set -e
        key="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
        openssl req -x509 $key -keyout ca.key -out ca.pem -days 2 -subj /CN=nats-test-ca
        for pair in server:subjectAltName=IP:127.0.0.1 client:extendedKeyUsage=clientAuth; do
          name=${pair%%:*}
          openssl req -x509 $key -keyout "$name.key" -out "$name.pem" -days 2 -subj "/CN=$name" \
            -CA ca.pem -CAkey ca.key -addext "${pair#*:}" -addext basicConstraints=critical,CA:FALSE
        done
    "#;
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes `input` through `sink`; how many events the sink delivered.
pub(crate) async fn delivered(input: &Path, sink: &str) -> u64 {
    let mut child = bridge(
        &["replay", &input.display().to_string(), "--sink", sink],
        &[],
    );
    let status = wait(&mut child, Duration::from_secs(60)).await;
    let log = stderr(&mut child);
    assert!(status.success(), "{sink}: {log}");
    summaries(&log)
        .values()
        .next()
        .and_then(|s| s["delivered"].as_u64())
        .expect("sink summary")
}

/// `replay` with `sink` must fail at start; its standard error.
pub(crate) fn refused(input: &Path, sink: &str) -> String {
    refused_with(input, sink, 1)
}

/// `replay` with `sink` must fail at start with exit code `code`; its standard error.
pub(crate) fn refused_with(input: &Path, sink: &str, code: i32) -> String {
    let out = Command::new(BIN)
        .args(["replay", &input.display().to_string(), "--sink", sink])
        .env_clear()
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{sink}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_password_or_nkey_and_a_token() {
    let scratch = Scratch::new("nats-auth");
    let input = all_recordings(&scratch);
    let want = replayed(&input).len() as u64;
    pki(&scratch.0);
    let p = |name: &str| scratch.path(name).display().to_string();
    let user = nkeys::KeyPair::new_user();
    std::fs::write(scratch.path("user.nk"), user.seed().expect("seed") + "\n").expect("seed file");
    let config = format!(
        r#"
        tls {{ cert_file: "{}", key_file: "{}", ca_file: "{}", verify: true }}
        authorization {{ users: [ {{ user: bridge, password: "pw-7f3a1c" }}, {{ nkey: {} }} ] }}
        "#,
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        user.public_key()
    );
    let server = NatsServer::start("auth-tls", Some(&config));
    let client =
        async_nats::ConnectOptions::with_user_and_password("bridge".into(), "pw-7f3a1c".into())
            .require_tls(true)
            .add_root_certificates(p("ca.pem").into())
            .add_client_certificate(p("client.pem").into(), p("client.key").into())
            .connect(format!("127.0.0.1:{}", server.port))
            .await
            .expect("test client connects with TLS and a password");
    let mut stream = create_stream(client, "KFP", &["kfp.>"]).await;
    let tls = format!(
        "ca_file={}&cert_file={}&key_file={}",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let at = format!("127.0.0.1:{}/kfp.{{namespace}}.{{type}}", server.port);

    let with_password = format!("tls://bridge:pw-7f3a1c@{at}?{tls}");
    assert_eq!(delivered(&input, &with_password).await, want);
    let with_nkey = format!("tls://{at}?nkey_file={}&{tls}", p("user.nk"));
    assert_eq!(delivered(&input, &with_nkey).await, want);
    // The second run's ids were de-duplicated by the server: each stored once.
    assert_eq!(stream.info().await.expect("info").state.messages, want);

    let err = refused(&input, &format!("tls://bridge:wrong-pw-55e1@{at}?{tls}"));
    assert!(err.contains("tls://***@127.0.0.1"), "names the sink: {err}");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(
        !err.contains("wrong-pw-55e1"),
        "the password is never logged: {err}"
    );
    // Without the client certificate the server's TLS handshake refuses the connection.
    let err = refused(
        &input,
        &format!("tls://bridge:pw-7f3a1c@{at}?ca_file={}", p("ca.pem")),
    );
    assert!(err.contains("tls://***@127.0.0.1"), "names the sink: {err}");
    assert!(!err.contains("pw-7f3a1c"), "{err}");

    let server = NatsServer::start(
        "auth-token",
        Some(r#"authorization { token: "tok-91c2d8" }"#),
    );
    let client = async_nats::ConnectOptions::with_token("tok-91c2d8".into())
        .connect(server.url())
        .await
        .expect("test client connects with the token");
    create_stream(client, "KFP", &["kfp.>"]).await;
    std::fs::write(scratch.path("token"), "tok-91c2d8\n").expect("token file");
    let subject = "kfp.{namespace}.{type}";
    let with_token = format!("{}/{subject}?token_file={}", server.url(), p("token"));
    assert_eq!(delivered(&input, &with_token).await, want);
    let err = refused(
        &input,
        &format!("nats://tok-bad-0042@127.0.0.1:{}/{subject}", server.port),
    );
    assert!(
        !err.contains("tok-bad-0042"),
        "the token is never logged: {err}"
    );
}

/// A NATS JWT (decentralised auth): header and claims as unpadded base64url JSON, signed with
/// the issuer's NKey (ed25519), as `nsc` makes them.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("TEST{}", name.to_uppercase()),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(&signature))
}

/// A `.creds` file as `nsc` writes it: the user JWT and the user's seed.
fn creds(user_jwt: &str, user: &nkeys::KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().expect("seed")
    )
}

/// Operator mode: the server trusts an operator, which signed an account (JetStream enabled),
/// which signed the bridge's user; the sink authenticates with the user's `.creds` file. A user
/// signed by an account the server does not know is refused at start, and neither the JWT nor the
/// seed appears in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_from_an_operator_signed_account() {
    let scratch = Scratch::new("nats-creds");
    let input = all_recordings(&scratch);
    let want = replayed(&input).len() as u64;
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "kfp",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    );
    // JetStream in operator mode needs a system account for its internal subscriptions.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "sys",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2
    });
    let user = nkeys::KeyPair::new_user();
    let user_jwt = jwt(&account, &user.public_key(), "bridge", user_claims.clone());
    std::fs::write(scratch.path("op.jwt"), &operator_jwt).expect("operator jwt");
    std::fs::write(scratch.path("bridge.creds"), creds(&user_jwt, &user)).expect("creds");
    let config = format!(
        "operator: \"{}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {}: \"{account_jwt}\", {sys}: \"{system_jwt}\" }}\n",
        scratch.path("op.jwt").display(),
        account.public_key(),
        sys = system.public_key(),
    );
    let server = NatsServer::start("auth-creds", Some(&config));
    let client = async_nats::ConnectOptions::with_credentials_file(scratch.path("bridge.creds"))
        .await
        .expect("creds file")
        .connect(server.url())
        .await
        .expect("test client connects with the creds file");
    let mut stream = create_stream(client, "KFP", &["kfp.>"]).await;
    let subject = "kfp.{namespace}.{type}";
    let creds_path = scratch.path("bridge.creds").display().to_string();
    let with_creds = format!("{}/{subject}?creds_file={creds_path}", server.url());
    assert_eq!(delivered(&input, &with_creds).await, want);
    assert_eq!(stream.info().await.expect("info").state.messages, want);

    // Signed by an account the server was never given.
    let stranger = nkeys::KeyPair::new_account();
    let intruder = nkeys::KeyPair::new_user();
    let intruder_jwt = jwt(&stranger, &intruder.public_key(), "intruder", user_claims);
    std::fs::write(
        scratch.path("intruder.creds"),
        creds(&intruder_jwt, &intruder),
    )
    .expect("creds");
    let err = refused(
        &input,
        &format!(
            "{}/{subject}?creds_file={}",
            server.url(),
            scratch.path("intruder.creds").display()
        ),
    );
    assert!(err.contains(&server.url()), "names the sink: {err}");
    assert!(err.contains("authorization violation"), "{err}");
    let seed = intruder.seed().expect("seed");
    assert!(
        !err.contains(&seed) && !err.contains(&intruder_jwt),
        "neither the seed nor the JWT is logged: {err}"
    );
}
