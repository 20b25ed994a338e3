//! The client against a small loopback server that checks every signature with the server's
//! own verifier, and answers the way Clary's JSON 1.1 and S3 APIs do.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const ACCESS: &str = "AKTEST";
const SECRET: &str = "secret/key";
const API: JsonApi = JsonApi {
    signing_service: "test",
    target_prefix: "Test.",
};

#[derive(Default)]
struct Fake {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    calls: Mutex<HashMap<String, usize>>,
    signed_headers: Mutex<Vec<Vec<String>>>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.into())))
        .unwrap()
}

impl Fake {
    fn answer(&self, parts: &http::request::Parts, body: Vec<u8>) -> http::Response<Full<Bytes>> {
        let auth = match clary_sigv4::verify(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &body,
            chrono::Utc::now(),
            |ak| (ak == ACCESS).then(|| SECRET.to_string()),
        ) {
            Ok(a) => a,
            Err(e) => {
                return reply(
                    403,
                    serde_json::json!({"__type": e.code(), "message": e.to_string()}).to_string(),
                );
            }
        };
        self.signed_headers
            .lock()
            .unwrap()
            .push(auth.signed_headers.clone());
        if let Some(target) = parts.headers.get("x-amz-target") {
            let target = target.to_str().unwrap().to_string();
            let n = {
                let mut calls = self.calls.lock().unwrap();
                let n = calls.entry(target.clone()).or_default();
                *n += 1;
                *n
            };
            return match target.as_str() {
                "Test.Echo" => reply(200, body),
                "Test.Empty" => reply(200, ""),
                "Test.Fail" => reply(
                    400,
                    r#"{"__type":"ValidationException","message":"1 validation error"}"#,
                ),
                "Test.Flaky" if n < 3 => reply(503, "try later"),
                "Test.Flaky" => reply(200, format!(r#"{{"attempts":{n}}}"#)),
                _ => reply(
                    400,
                    r#"{"__type":"UnknownOperationException","Message":"no such op"}"#,
                ),
            };
        }
        let path = parts.uri.path().to_string();
        let mut objects = self.objects.lock().unwrap();
        match (&parts.method, parts.uri.query()) {
            (&http::Method::GET, Some(q)) if q.contains("list-type=2") => {
                let page = if q.contains("continuation-token=next%2F%2B") {
                    "<Contents><Key>p q/2</Key><Size>2</Size></Contents><IsTruncated>false</IsTruncated>"
                } else {
                    assert!(q.contains("prefix=p%20q%2F"), "{q}");
                    "<Contents><Key>p q/1</Key><Size>1</Size></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>next/+</NextContinuationToken>"
                };
                reply(200, format!("<ListBucketResult>{page}</ListBucketResult>"))
            }
            (&http::Method::PUT, _) => {
                assert_eq!(
                    parts.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD",
                    "uploads stream unhashed"
                );
                assert_eq!(
                    parts.headers["content-length"].to_str().unwrap(),
                    body.len().to_string()
                );
                objects.insert(path, body);
                reply(200, "")
            }
            (&http::Method::HEAD, _) if path == "/bkt" => reply(200, ""),
            (&http::Method::GET | &http::Method::HEAD, _) => match objects.get(&path) {
                Some(b) if parts.method == http::Method::HEAD => http::Response::builder()
                    .header("content-length", b.len())
                    .header("etag", "\"e\"")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                Some(b) => reply(200, b.clone()),
                None => reply(
                    404,
                    format!(
                        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist: {path}</Message></Error>"
                    ),
                ),
            },
            _ => reply(405, ""),
        }
    }
}

/// Starts the fake server; returns its URL.
async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let fake = fake.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let fake = fake.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes().to_vec();
                        Ok::<_, hyper::Error>(fake.answer(&parts, body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

fn client(url: &str) -> SignedClient {
    SignedClient::new(
        url,
        Signer {
            access_key: ACCESS.into(),
            secret_key: SECRET.into(),
            region: "us-west-2".into(),
        },
    )
}

#[tokio::test]
async fn json_calls_sign_their_target_and_type_their_errors() {
    let fake = Arc::new(Fake::default());
    let c = client(&serve(fake.clone()).await);
    assert_eq!(c.base_url().matches('/').count(), 2, "no trailing slash");
    let v = c
        .call_json(API, "Echo", &serde_json::json!({"a": [1, "ü"]}))
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"a": [1, "ü"]}));
    assert_eq!(
        c.call_json(API, "Empty", &()).await.unwrap(),
        serde_json::json!("")
    );
    for signed in fake.signed_headers.lock().unwrap().iter() {
        assert_eq!(
            signed,
            &[
                "content-type",
                "host",
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-target"
            ]
        );
    }
    let err = c.call_json(API, "Fail", &()).await.unwrap_err();
    assert_eq!(err.to_string(), "ValidationException: 1 validation error");
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST));
    assert!(!err.is_retryable());
    let err = c.call_json(API, "Other", &()).await.unwrap_err();
    assert_eq!(err.to_string(), "UnknownOperationException: no such op");
    // A wrong key pair is refused with the verifier's code.
    let mut wrong = client(c.base_url());
    wrong.signer.secret_key = "nope".into();
    let err = wrong.call_json(API, "Echo", &()).await.unwrap_err();
    assert!(
        err.to_string().starts_with("SignatureDoesNotMatch: "),
        "{err}"
    );
}

#[tokio::test]
async fn retries_wait_out_server_failures_but_not_refusals() {
    let fake = Arc::new(Fake::default());
    let c = client(&serve(fake.clone()).await);
    let retry = Retry {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        give_up_after: Duration::from_secs(30),
    };
    let v = c
        .call_json_retrying(API, "Flaky", &(), &retry)
        .await
        .unwrap();
    assert_eq!(v["attempts"], 3);
    assert!(
        c.call_json_retrying(API, "Fail", &(), &retry)
            .await
            .is_err()
    );
    assert_eq!(fake.calls.lock().unwrap()["Test.Fail"], 1);
    // Nobody listening: retried until the time is up.
    let gone = client("http://127.0.0.1:1");
    let quick = Retry {
        give_up_after: Duration::from_millis(20),
        ..retry
    };
    let err = gone.call_json_retrying(API, "Echo", &(), &quick).await;
    assert!(matches!(err, Err(ClientError::Transport(_))));
}

#[tokio::test]
async fn objects_go_up_come_back_and_list_page_by_page() {
    let fake = Arc::new(Fake::default());
    let c = client(&serve(fake.clone()).await);
    let dir = std::env::temp_dir().join(format!("clary-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("up.bin");
    let data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let key = "dir/ünï +~.bin";
    let n = c
        .put_object_file("bkt", key, &file, Some("application/x-tar"), move |n| {
            counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), n);
    assert!(
        fake.objects
            .lock()
            .unwrap()
            .contains_key("/bkt/dir/%C3%BCn%C3%AF%20%2B~.bin")
    );
    let mut body = c.get_object("bkt", key).await.unwrap();
    let mut got = Vec::new();
    while let Some(piece) = body.chunk().await.unwrap() {
        got.extend_from_slice(&piece);
    }
    assert_eq!(got, data);
    let head = c.head_object("bkt", key).await.unwrap().unwrap();
    assert_eq!((head.size, head.etag.as_deref()), (n, Some("\"e\"")));
    assert_eq!(c.head_object("bkt", "missing").await.unwrap(), None);
    let err = match c.get_object("bkt", "missing").await {
        Err(e) => e,
        Ok(_) => panic!("a missing key was found"),
    };
    assert_eq!(
        err.to_string(),
        "HTTP 404 Not Found: The specified key does not exist: /bkt/missing"
    );
    assert!(c.head_bucket("bkt").await.unwrap());
    assert!(!c.head_bucket("other").await.unwrap());
    let all = c.list_objects("bkt", "p q/").await.unwrap();
    assert_eq!(
        all.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["p q/1", "p q/2"]
    );
    let absent = dir.join("absent");
    let missing = c.put_object_file("bkt", "x", &absent, None, |_| {}).await;
    assert!(matches!(missing, Err(ClientError::File { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}
