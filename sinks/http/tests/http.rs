//! The HTTP sink against a real HTTP server on 127.0.0.1: the three content modes, attribute
//! encoding, status classes, `Retry-After`, timeouts, refused connections, tokens and headers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
use percent_encoding::percent_decode_str;
use sink_core::{Sink, SinkError, structured};
use sink_http::HttpSink;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// What the receiver answers: a status, optional headers, optional delay.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Request>>>,
    answer: Arc<Mutex<Answer>>,
}

async fn handle(State(rx): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    rx.seen.lock().expect("lock").push(Request {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let answer = rx.answer.lock().expect("lock").clone();
    tokio::time::sleep(answer.delay).await;
    let mut response = (
        StatusCode::from_u16(answer.status).expect("status"),
        "receiver says so",
    )
        .into_response();
    for (name, value) in answer.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

async fn receiver(status: u16) -> (Receiver, String) {
    let rx = Receiver {
        seen: Arc::default(),
        answer: Arc::new(Mutex::new(Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        })),
    };
    let app = Router::new().fallback(handle).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (rx, format!("http://{addr}"))
}

impl Receiver {
    fn seen(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").clone()
    }
    fn answer(&self, status: u16, headers: Vec<(&'static str, String)>) {
        let mut a = self.answer.lock().expect("lock");
        a.status = status;
        a.headers = headers;
    }
    fn delay(&self, delay: Duration) {
        self.answer.lock().expect("lock").delay = delay;
    }
}

fn tricky_event() -> Event {
    EventBuilderV10::new()
        .id("id with space & 100% \"quotes\"")
        .source("https://kubernetes.default.svc/apis/argoproj.io/v1alpha1/namespaces/t/workflows/w")
        .ty("org.kubeflow.pipelines.task.failed")
        .subject("team a/Euro € 😀/tab\there")
        .time(
            chrono::DateTime::parse_from_rfc3339("2026-03-14T09:00:01.5Z")
                .expect("time")
                .with_timezone(&chrono::Utc),
        )
        .extension("namespace", "team a/b")
        .extension("partitionkey", "run-1")
        .extension("pipeline", "débutant")
        .data_with_schema(
            "application/json",
            "urn:kfp-event-bridge:schema:event-data:v1",
            serde_json::json!({"KfpRunId": "run-1", "Message": "ünïcode"}),
        )
        .build()
        .expect("event")
}

async fn deliver(sink: &HttpSink, event: &Event) -> Result<(), SinkError> {
    sink.publish(event).await?.await
}

fn decoded(headers: &HeaderMap, name: &str) -> Option<String> {
    let raw = headers.get(name)?.to_str().expect("ASCII header");
    Some(
        percent_decode_str(raw)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned(),
    )
}

#[tokio::test]
async fn binary_mode_round_trips_every_attribute() {
    let (rx, base) = receiver(202).await;
    let sink = HttpSink::open(&format!("{base}/hook"), None, None, None).expect("opens");
    let event = tricky_event();
    deliver(&sink, &event).await.expect("delivered");
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(decoded(h, "ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(decoded(h, "ce-id").as_deref(), Some(event.id()));
    assert_eq!(
        decoded(h, "ce-source").as_deref(),
        Some(event.source().as_str())
    );
    assert_eq!(decoded(h, "ce-type").as_deref(), Some(event.ty()));
    assert_eq!(decoded(h, "ce-subject").as_deref(), event.subject());
    assert_eq!(
        decoded(h, "ce-time").as_deref(),
        Some("2026-03-14T09:00:01.500Z")
    );
    assert_eq!(
        decoded(h, "ce-dataschema").as_deref(),
        Some("urn:kfp-event-bridge:schema:event-data:v1")
    );
    assert_eq!(decoded(h, "ce-namespace").as_deref(), Some("team a/b"));
    assert_eq!(decoded(h, "ce-pipeline").as_deref(), Some("débutant"));
    assert_eq!(decoded(h, "ce-partitionkey").as_deref(), Some("run-1"));
    assert_eq!(
        h.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert!(
        h.get("ce-datacontenttype").is_none(),
        "binding: no ce-datacontenttype"
    );
    // The encoding is the binding's: space, quote, percent and non-ASCII, upper-case hex.
    assert_eq!(
        h.get("ce-id").expect("id").to_str().expect("ascii"),
        "id%20with%20space%20&%20100%25%20%22quotes%22"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON body");
    assert_eq!(body["Message"], "ünïcode");
    assert_eq!(seen[0].path, "/hook");
}

#[tokio::test]
async fn structured_mode_sends_the_json_event_format() {
    let (rx, base) = receiver(200).await;
    let sink =
        HttpSink::open(&format!("{base}/s?mode=structured"), None, None, None).expect("opens");
    let event = tricky_event();
    deliver(&sink, &event).await.expect("delivered");
    let seen = rx.seen();
    assert_eq!(
        seen[0].headers.get("content-type").expect("ct"),
        "application/cloudevents+json; charset=utf-8"
    );
    assert!(
        seen[0]
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("ce-"))
    );
    assert_eq!(seen[0].body, structured::to_vec(&event));
    let parsed: Event = serde_json::from_slice(&seen[0].body).expect("SDK parses");
    assert_eq!(parsed.subject(), event.subject());
}

#[tokio::test]
async fn batch_mode_posts_arrays_bounded_by_count() {
    let (rx, base) = receiver(200).await;
    let sink = HttpSink::open(
        &format!("{base}/b?mode=batch&batch_max_events=4&batch_linger=200ms"),
        None,
        None,
        None,
    )
    .expect("opens");
    let events: Vec<Event> = (0..10)
        .map(|i| {
            let mut e = tricky_event();
            e.set_id(format!("e{i}"));
            e
        })
        .collect();
    let mut receipts = Vec::new();
    for e in &events {
        receipts.push(sink.publish(e).await.expect("accepted"));
    }
    for r in receipts {
        r.await.expect("delivered");
    }
    let seen = rx.seen();
    let sizes: Vec<usize> = seen
        .iter()
        .map(|r| {
            assert_eq!(
                r.headers.get("content-type").expect("ct"),
                "application/cloudevents-batch+json; charset=utf-8"
            );
            let batch: Vec<Event> = serde_json::from_slice(&r.body).expect("array of events");
            batch.len()
        })
        .collect();
    assert_eq!(sizes, [4, 4, 2]);
    let ids: Vec<String> = seen
        .iter()
        .flat_map(|r| serde_json::from_slice::<Vec<Event>>(&r.body).expect("batch"))
        .map(|e| e.id().to_owned())
        .collect();
    assert_eq!(ids, (0..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn status_codes_map_to_the_documented_classes() {
    let (rx, base) = receiver(200).await;
    let sink = HttpSink::open(&base, None, None, None).expect("opens");
    let event = tricky_event();
    for code in [200, 201, 202, 204] {
        rx.answer(code, vec![]);
        assert!(deliver(&sink, &event).await.is_ok(), "{code}");
    }
    for code in [404, 408, 409, 500, 502, 503] {
        rx.answer(code, vec![]);
        let err = deliver(&sink, &event).await.expect_err("fails");
        assert!(err.is_transient(), "{code}: {err}");
        assert_eq!(err.retry_after(), None);
    }
    for code in [400, 401, 403, 410, 413, 415] {
        rx.answer(code, vec![]);
        let err = deliver(&sink, &event).await.expect_err("fails");
        assert_eq!(err.class(), "permanent", "{code}");
        assert!(
            err.to_string().contains("receiver says so"),
            "body quoted: {err}"
        );
    }
    rx.answer(429, vec![("retry-after", "7".into())]);
    let err = deliver(&sink, &event).await.expect_err("fails");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    rx.answer(
        503,
        vec![("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".into())],
    );
    let err = deliver(&sink, &event).await.expect_err("fails");
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (rx, base) = receiver(200).await;
    rx.answer(307, vec![("location", format!("{base}/elsewhere"))]);
    let sink = HttpSink::open(&format!("{base}/here"), None, None, None).expect("opens");
    let err = deliver(&sink, &tricky_event()).await.expect_err("fails");
    assert_eq!(err.class(), "permanent");
    assert!(
        err.to_string().contains("redirects are not followed"),
        "{err}"
    );
    let paths: Vec<String> = rx.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/here"]);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let (rx, base) = receiver(200).await;
    rx.delay(Duration::from_secs(3));
    let sink = HttpSink::open(&format!("{base}/?timeout=200ms"), None, None, None).expect("opens");
    let err = deliver(&sink, &tricky_event())
        .await
        .expect_err("times out");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // closed again: nothing listens there now
    let sink =
        HttpSink::open(&format!("http://127.0.0.1:{port}/"), None, None, None).expect("opens");
    let err = deliver(&sink, &tricky_event()).await.expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn headers_tokens_and_url_templates() {
    let (rx, base) = receiver(200).await;
    let dir = std::env::temp_dir().join(format!("sink-http-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("token");
    std::fs::write(&token, "first-token\n").expect("token");
    let sink = HttpSink::open(
        &format!("{base}/hooks/{{namespace}}/{{type}}?code=abc"),
        Some("hooks"),
        Some(&[
            ("header".to_owned(), "X-Team: data".to_owned()),
            ("token_file".to_owned(), token.display().to_string()),
        ]),
        None,
    )
    .expect("opens");
    assert_eq!(sink.name(), "hooks");
    deliver(&sink, &tricky_event()).await.expect("delivered");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&token, "second-token").expect("rotate");
    // Make sure the modification time differs even on coarse clocks.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&token)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    deliver(&sink, &tricky_event()).await.expect("delivered");
    let seen = rx.seen();
    assert_eq!(seen[0].path, "/hooks/team%20a%2Fb/task.failed");
    assert_eq!(seen[0].headers.get("x-team").expect("header"), "data");
    assert_eq!(
        seen[0].headers.get("authorization").expect("auth"),
        "Bearer first-token"
    );
    assert_eq!(
        seen[1].headers.get("authorization").expect("auth"),
        "Bearer second-token"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_field_named() {
    type Options = Option<Vec<(String, String)>>;
    let cases: [(&str, Options, &str); 6] = [
        ("http://h/?mode=fast", None, "mode:"),
        (
            "http://h/",
            Some(vec![("nope".into(), "1".into())]),
            "unknown option \"nope\"",
        ),
        (
            "http://h/{namespace}?mode=batch",
            None,
            "batch mode needs a fixed URL",
        ),
        ("http://h/{nope}", None, "unknown template variable {nope}"),
        ("ftp://h/", None, "unsupported scheme"),
        (
            "http://h/",
            Some(vec![("cert_file".into(), "/x".into())]),
            "cert_file and key_file go together",
        ),
    ];
    for (uri, options, want) in cases {
        let err = match HttpSink::open(uri, None, options.as_deref(), None) {
            Ok(_) => panic!("{uri} should be refused"),
            Err(err) => err,
        };
        assert_eq!(err.class(), "config", "{uri}");
        assert!(err.to_string().contains(want), "{uri}: {err}");
    }
    let err = match HttpSink::open(
        "https://u:secret@h/",
        None,
        Some(&[("ca_file".into(), "/nonexistent".into())]),
        None,
    ) {
        Ok(_) => panic!("missing CA file"),
        Err(err) => err,
    };
    assert!(
        !err.to_string().contains("secret"),
        "credentials leaked: {err}"
    );
}
