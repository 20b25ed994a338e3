//! A [`PresignedStore`] against a scripted S3 server on loopback: the failures a real store
//! rarely shows on cue (503 SlowDown, an expired URL, a part refused, a body cut short) and
//! the shapes of its requests (ranges, parts, the completion's ETags).

use super::*;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One request the fake store received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn has_query(&self, q: &str) -> bool {
        self.target.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|p| p == q || p.starts_with(&format!("{q}=")))
        })
    }
}

/// An answer: status, headers, body, and how much of the body to send before hanging up
/// (or, with `stall`, before falling silent for seconds with the connection open).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_at: Option<usize>,
    stall: bool,
}

fn answer(status: u16, body: impl Into<Vec<u8>>) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: body.into(),
        cut_at: None,
        stall: false,
    }
}

fn s3_error(status: u16, code: &str) -> Answer {
    answer(
        status,
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message></Message></Error>"),
    )
}

type Handler = dyn Fn(&Seen, usize) -> Answer + Send + Sync;

/// A loopback HTTP/1.1 server that answers each request with `handler(request, its number)`.
struct FakeStore {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeStore {
    fn start(handler: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, count) = (seen.clone(), Arc::new(AtomicUsize::new(0)));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, handler, count) = (seen2.clone(), handler.clone(), count.clone());
                std::thread::spawn(move || serve(conn, &seen, handler.as_ref(), &count));
            }
        });
        FakeStore { endpoint, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler, count: &AtomicUsize) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (method, target) = (
            first.next().unwrap_or_default().to_string(),
            first.next().unwrap_or_default().to_string(),
        );
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if conn.read_exact(&mut body).is_err() {
            return;
        }
        let request = Seen {
            method,
            target,
            headers,
            body,
        };
        seen.lock().unwrap().push(request.clone());
        let a = handler(&request, count.fetch_add(1, Ordering::SeqCst));
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.body.len()
        );
        for (k, v) in &a.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if request.method != "HEAD" {
            bytes.extend_from_slice(&a.body[..a.cut_at.unwrap_or(a.body.len())]);
        }
        if conn.write_all(&bytes).is_err() || a.cut_at.is_some() {
            if a.stall {
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
            return;
        }
    }
}

/// Presigns by naming the store's path with a `gen=` that counts the presign calls, so a test
/// sees which URL a request used.
struct FakePresigner {
    endpoint: String,
    calls: AtomicUsize,
}

impl Presign for FakePresigner {
    fn presign(&self, requests: Vec<PresignRequest>) -> PresignFuture {
        let generation = self.calls.fetch_add(1, Ordering::SeqCst);
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let urls = requests
                .iter()
                .map(|r| {
                    let mut url = format!("{endpoint}/{}", r.bucket);
                    if let Some(k) = &r.key {
                        url.push('/');
                        url.push_str(&clary_client::s3::encode_key(k));
                    }
                    let sep = if r.query.is_empty() { "" } else { "&" };
                    format!("{url}?{}{sep}gen={generation}", r.query)
                })
                .collect();
            Ok(PresignedBatch {
                urls,
                store: endpoint,
            })
        })
    }
}

fn store_for(fake: &FakeStore, tuning: Tuning) -> (PresignedStore, Arc<FakePresigner>) {
    let presigner = Arc::new(FakePresigner {
        endpoint: fake.endpoint.clone(),
        calls: AtomicUsize::new(0),
    });
    let store = PresignedStore::new(presigner.clone(), tuning).unwrap();
    (store, presigner)
}

fn quick() -> Tuning {
    Tuning {
        range_size: 1 << 20,
        part_size: 5 << 20,
        concurrency: 4,
        attempts: 4,
        silence: std::time::Duration::from_millis(300),
    }
}

/// `data[a..=b]` for a `Range: bytes=a-b` (or `a-`), as a 206 with its Content-Range.
fn ranged(data: &[u8], range: Option<&String>, etag: &str) -> Answer {
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        let mut a = answer(200, data.to_vec());
        a.headers.push(("ETag".into(), etag.into()));
        return a;
    };
    let (from, to) = spec.split_once('-').unwrap();
    let from: usize = from.parse().unwrap();
    let to: usize = to
        .parse()
        .map_or(data.len() - 1, |t: usize| t.min(data.len() - 1));
    let mut a = answer(206, data[from..=to].to_vec());
    a.headers.push((
        "Content-Range".into(),
        format!("bytes {from}-{to}/{}", data.len()),
    ));
    a.headers.push(("ETag".into(), etag.into()));
    a
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn transient_errors_are_retried_and_a_refused_url_is_presigned_afresh() {
    let fake = FakeStore::start(|req, n| match n {
        0 => s3_error(503, "SlowDown"),
        // What Ceph RGW answers to an expired URL.
        1 => s3_error(403, "AccessDenied"),
        _ if req.target.contains("gen=1") => answer(200, b"fresh".to_vec()),
        _ => s3_error(403, "AccessDenied"),
    });
    let (store, presigner) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("obj");
    store
        .fetch_many(&[FetchItem {
            bucket: "b".into(),
            key: "k".into(),
            target: target.clone(),
            size: Some(5),
        }])
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"fresh");
    assert_eq!(presigner.calls.load(Ordering::SeqCst), 2);
    assert_eq!(fake.seen().len(), 3);
}

#[test]
fn a_refusal_that_persists_is_final_and_names_the_store_the_object_and_the_error() {
    let fake = FakeStore::start(|_, _| s3_error(404, "NoSuchKey"));
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let err = store
        .fetch_to("data", "in/a b.csv", &dir.path().join("x"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "reading s3://data/in/a b.csv from the object store at {}: HTTP 404 NoSuchKey: the object does not exist (deleted or never written)",
            fake.endpoint
        )
    );
    // Not retried: a missing object stays missing.
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(fake.seen()[0].path(), "/data/in/a%20b.csv");
    assert_eq!(store.object_size("data", "in/x").unwrap(), None);
}

#[test]
fn an_objects_size_and_a_buckets_existence_come_from_heads() {
    let fake = FakeStore::start(|req, _| match req.path() {
        "/b/k" | "/b" => answer(200, vec![0u8; 1234]),
        _ => s3_error(404, "NoSuchKey"),
    });
    let (store, _) = store_for(&fake, quick());
    assert_eq!(store.object_size("b", "k").unwrap(), Some(1234));
    assert!(store.bucket_exists("b").unwrap());
    assert!(!store.bucket_exists("nope").unwrap());
    assert!(fake.seen().iter().all(|s| s.method == "HEAD"));
}

#[test]
fn a_large_object_comes_in_ranges_of_the_same_version_written_at_their_offsets() {
    let data = Arc::new(pattern((3 << 20) + 12345));
    let d2 = data.clone();
    let fake = FakeStore::start(move |req, _| ranged(&d2, req.headers.get("range"), "\"v1\""));
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big");
    std::fs::write(
        &target,
        b"an older, longer file that must not linger at the end",
    )
    .unwrap();
    assert_eq!(
        store.fetch_to("b", "big", &target).unwrap(),
        Fetched::Downloaded
    );
    assert_eq!(std::fs::read(&target).unwrap(), *data);
    let mut ranges: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| s.headers["range"].clone())
        .collect();
    ranges.sort();
    assert_eq!(
        ranges,
        [
            "bytes=0-1048575",
            "bytes=1048576-2097151",
            "bytes=2097152-3145727",
            "bytes=3145728-3158072"
        ]
    );
    // Every range after the first asks for the version the first one saw.
    let matched = fake
        .seen()
        .iter()
        .filter(|s| s.headers.get("if-match").map(String::as_str) == Some("\"v1\""))
        .count();
    assert_eq!(matched, 3);
}

#[test]
fn a_store_that_ignores_range_gives_the_whole_object_at_once() {
    let data = Arc::new(pattern((2 << 20) + 5));
    let d2 = data.clone();
    let fake = FakeStore::start(move |_, _| ranged(&d2, None, "\"v1\""));
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("whole");
    store.fetch_to("b", "whole", &target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), *data);
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn an_empty_object_is_an_empty_file() {
    let fake = FakeStore::start(|req, _| {
        if req.headers.contains_key("range") {
            s3_error(416, "InvalidRange")
        } else {
            answer(200, Vec::new())
        }
    });
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("empty");
    store.fetch_to("b", "empty", &target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"");
}

#[test]
fn a_stream_cut_short_resumes_from_where_it_broke() {
    let data = Arc::new(pattern(300_000));
    let d2 = data.clone();
    let fake = FakeStore::start(move |req, n| {
        let mut a = ranged(&d2, req.headers.get("range"), "\"v1\"");
        if n == 0 {
            // The connection drops a third of the way in.
            a.cut_at = Some(100_000);
        }
        a
    });
    let (store, _) = store_for(&fake, quick());
    let mut out = Vec::new();
    store
        .reader("b", "stream")
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, *data);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["range"], "bytes=100000-");
    assert_eq!(seen[1].headers["if-match"], "\"v1\"");
}

#[test]
fn a_silent_store_is_left_for_a_fresh_request_but_a_slow_reader_is_not_a_silent_store() {
    let data = Arc::new(pattern(4 << 20));
    let d2 = data.clone();
    let fake = FakeStore::start(move |req, n| {
        let mut a = ranged(&d2, req.headers.get("range"), "\"v1\"");
        if req.path() == "/b/stalls" && n == 0 {
            a.cut_at = Some(1 << 20);
            a.stall = true;
        }
        a
    });
    let (store, _) = store_for(&fake, quick());
    // The store goes quiet a quarter of the way in: after `silence` the rest is asked for.
    let mut out = Vec::new();
    store
        .reader("b", "stalls")
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, *data);
    assert_eq!(
        fake.seen()[1].headers["range"],
        format!("bytes={}-", 1 << 20)
    );
    // A reader that pauses for longer than `silence` (a training step between reads) keeps
    // its one stream.
    let mut reader = store.reader("b", "steady").unwrap();
    let mut first = vec![0u8; 64 << 10];
    reader.read_exact(&mut first).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(900));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(first, *data);
    assert_eq!(
        fake.seen().len(),
        3,
        "{:?}",
        fake.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );
}

#[test]
fn a_stream_resumed_from_a_store_that_ignores_range_skips_what_it_had() {
    let data = Arc::new(pattern(300_000));
    let d2 = data.clone();
    let fake = FakeStore::start(move |_, n| {
        let mut a = ranged(&d2, None, "\"v1\"");
        if n == 0 {
            a.cut_at = Some(123_457);
        }
        a
    });
    let (store, _) = store_for(&fake, quick());
    let mut out = Vec::new();
    store
        .reader("b", "stream")
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, *data);
    assert_eq!(fake.seen().len(), 2);
}

#[test]
fn listings_follow_continuation_tokens_page_by_page() {
    let fake = FakeStore::start(|req, _| {
        let page = |keys: &[&str], next: Option<&str>| {
            let mut xml = String::from("<ListBucketResult>");
            for k in keys {
                xml.push_str(&format!(
                    "<Contents><Key>{k}</Key><Size>3</Size></Contents>"
                ));
            }
            match next {
                Some(t) => xml.push_str(&format!(
                    "<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>"
                )),
                None => xml.push_str("<IsTruncated>false</IsTruncated>"),
            }
            answer(200, format!("{xml}</ListBucketResult>"))
        };
        if req.target.contains("continuation-token=t%2F1") {
            page(&["d/c"], None)
        } else {
            page(&["d/a", "d/b"], Some("t/1"))
        }
    });
    let (store, _) = store_for(&fake, quick());
    let keys: Vec<String> = store
        .list("b", "d/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["d/a", "d/b", "d/c"]);
    assert!(
        fake.seen()[0]
            .target
            .starts_with("/b?list-type=2&prefix=d%2F&")
    );
}

/// A store that takes multipart uploads; `refuse_part` is answered 400 BadDigest.
fn multipart_store(refuse_part: Option<u32>) -> FakeStore {
    FakeStore::start(move |req, _| match req.method.as_str() {
        "POST" if req.has_query("uploads") => answer(
            200,
            "<InitiateMultipartUploadResult><UploadId>up/1</UploadId></InitiateMultipartUploadResult>",
        ),
        "PUT" if req.has_query("partNumber") => {
            let n: u32 = req
                .target
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix("partNumber="))
                .unwrap()
                .parse()
                .unwrap();
            if Some(n) == refuse_part {
                return s3_error(400, "BadDigest");
            }
            let mut a = answer(200, Vec::new());
            a.headers.push(("ETag".into(), format!("\"etag-{n}\"")));
            a
        }
        "POST" => answer(200, "<CompleteMultipartUploadResult/>"),
        "DELETE" => answer(204, Vec::new()),
        _ => {
            let mut a = answer(200, Vec::new());
            a.headers.push(("ETag".into(), "\"single\"".into()));
            a
        }
    })
}

#[test]
fn a_large_file_goes_up_in_parts_completed_with_their_etags_in_order() {
    let fake = multipart_store(None);
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tar.gz");
    let data = pattern((11 << 20) + 7);
    std::fs::write(&file, &data).unwrap();
    let n = store
        .put_file("b", "out/model.tar.gz", &file, Some("application/x-tar"))
        .unwrap();
    assert_eq!(n, data.len() as u64);
    let seen = fake.seen();
    let create = seen.iter().find(|s| s.has_query("uploads")).unwrap();
    assert_eq!(create.headers["content-type"], "application/x-tar");
    let mut parts: Vec<&Seen> = seen.iter().filter(|s| s.has_query("partNumber")).collect();
    parts.sort_by_key(|s| s.target.clone());
    assert_eq!(parts.len(), 3);
    // Every part names the upload (its id encoded) and carries its MD5 for the store to check.
    assert!(
        parts
            .iter()
            .all(|p| p.has_query("uploadId") && p.target.contains("uploadId=up%2F1"))
    );
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.body.clone()).collect();
    assert_eq!(joined, data);
    let md5 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        <md5::Md5 as md5::Digest>::digest(&parts[0].body),
    );
    assert_eq!(parts[0].headers["content-md5"], md5);
    let complete = seen
        .iter()
        .find(|s| s.method == "POST" && s.has_query("uploadId"))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&complete.body),
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;etag-1&quot;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&quot;etag-2&quot;</ETag></Part><Part><PartNumber>3</PartNumber><ETag>&quot;etag-3&quot;</ETag></Part></CompleteMultipartUpload>"
    );
    assert!(!seen.iter().any(|s| s.method == "DELETE"));
}

#[test]
fn a_failed_part_aborts_the_upload_so_nothing_half_written_stays() {
    let fake = multipart_store(Some(2));
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ckpt");
    std::fs::write(&file, pattern(11 << 20)).unwrap();
    let err = store.put_file("b", "ck/state", &file, None).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "uploading s3://b/ck/state to the object store at {}: HTTP 400 BadDigest",
            fake.endpoint
        )),
        "{err}"
    );
    let seen = fake.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "DELETE" && s.target.contains("uploadId=up%2F1")),
        "no AbortMultipartUpload"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "POST" && s.has_query("uploadId"))
    );
}

#[test]
fn a_small_file_is_one_put_with_its_md5_and_type() {
    let fake = multipart_store(None);
    let (store, _) = store_for(&fake, quick());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small");
    std::fs::write(&file, b"tiny").unwrap();
    assert_eq!(
        store
            .put_file("b", "k", &file, Some("application/json"))
            .unwrap(),
        4
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].body.as_slice()),
        ("PUT", &b"tiny"[..])
    );
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(seen[0].headers["content-md5"], "1gyt8aQcZR4fCt5QE2utQw==");
}
