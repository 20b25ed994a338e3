//! `ClaryAgent.PresignObjectRequests`: with an external store, hosts (agents, model servers)
//! reach it directly with URLs the server presigns here, a batch at a time, so the store's
//! key pair never leaves the server and no byte of data passes through it. Each request is
//! the S3 operation its method, key and query make; a scoped key gets it only if the S3 API
//! would let that key make it (`access::may_s3`: reads anywhere, writes under its grants).

use crate::access;
use crate::errors::ApiError;
use crate::{ApiState, Backing};
use clary_control::ControlError;
use clary_control::domain::credentials::ScopedKey;
use clary_store::presigned::{MAX_BATCH, PresignBatch, PresignRequest, PresignedBatch};
use serde_json::Value;

fn invalid(message: String) -> ApiError {
    ApiError::Control(ControlError::Validation(message))
}

/// Presigns every request of the batch, in order, or refuses the whole batch at the first
/// request the caller may not make. `scoped` is the caller's key (`None`: the server's own).
pub fn handle(
    state: &ApiState,
    scoped: Option<&ScopedKey>,
    body: Value,
) -> Result<Value, ApiError> {
    let Backing::External(store) = &state.store else {
        return Err(invalid(
            "This server keeps its objects in its own directory, not in an external S3 store: there is nothing to presign. Hosts reach its objects through its S3 API or its disk.".into(),
        ));
    };
    let batch: PresignBatch = serde_json::from_value(body)
        .map_err(|e| invalid(format!("malformed PresignObjectRequests: {e}")))?;
    if batch.requests.len() > MAX_BATCH {
        return Err(invalid(format!(
            "{} requests in one PresignObjectRequests; send at most {MAX_BATCH}",
            batch.requests.len()
        )));
    }
    let mut urls = Vec::with_capacity(batch.requests.len());
    for r in &batch.requests {
        let (method, op) = operation(r).map_err(invalid)?;
        if let Some(key) = scoped {
            access::may_s3(key, op, Some(&r.bucket), r.key.as_deref())
                .map_err(ApiError::AccessDenied)?;
        }
        let url = store.url(Some(&r.bucket), r.key.as_deref(), &r.query);
        let signed = store.presign(&method, &url).map_err(|e| {
            ApiError::Control(ControlError::Internal(format!("presigning {url}: {e}")))
        })?;
        urls.push(signed);
    }
    serde_json::to_value(PresignedBatch {
        urls,
        store: store.config().endpoint.clone(),
    })
    .map_err(|e| ApiError::Control(ControlError::Internal(e.to_string())))
}

/// Query parameters each operation may carry besides the one that names it.
const LIST_V2: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "continuation-token",
    "max-keys",
    "start-after",
    "encoding-type",
    "fetch-owner",
];
const LIST_V1: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type"];
const LIST_UPLOADS: &[&str] = &[
    "uploads",
    "prefix",
    "delimiter",
    "key-marker",
    "upload-id-marker",
    "max-uploads",
    "encoding-type",
];
const GET_OBJECT: &[&str] = &[
    "partNumber",
    "versionId",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
];
const LIST_PARTS: &[&str] = &["uploadId", "max-parts", "part-number-marker"];

/// The HTTP method and the S3 operation a request is, if it is one hosts may have presigned:
/// a bucket or object name S3 accepts, a query of encoded `name=value` pairs with only the
/// parameters of that operation (never signature parameters of its own).
pub fn operation(r: &PresignRequest) -> Result<(http::Method, &'static str), String> {
    clary_store::local::validate_bucket_name(&r.bucket).map_err(|e| e.to_string())?;
    if let Some(key) = &r.key {
        clary_store::local::validate_key(key).map_err(|e| e.to_string())?;
        // A URL normalizes `.` and `..` segments away, so such a key would name another object.
        if key.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "the key {key:?} has a '.' or '..' segment, which cannot be presigned"
            ));
        }
    }
    let names = query_names(&r.query)?;
    let has = |n: &str| names.iter().any(|m| m == n);
    let only = |allowed: &[&str]| names.iter().all(|n| allowed.contains(&n.as_str()));
    let op = match (r.method.as_str(), r.key.is_some()) {
        ("GET", false) if has("list-type") && only(LIST_V2) => "ListObjectsV2",
        ("GET", false) if has("uploads") && only(LIST_UPLOADS) => "ListMultipartUploads",
        ("GET", false) if names == ["location"] => "GetBucketLocation",
        ("GET", false) if only(LIST_V1) => "ListObjects",
        ("HEAD", false) if names.is_empty() => "HeadBucket",
        ("GET", true) if has("uploadId") && only(LIST_PARTS) => "ListParts",
        ("GET", true) if names == ["tagging"] => "GetObjectTagging",
        ("GET", true) if only(GET_OBJECT) => "GetObject",
        ("HEAD", true) if only(&["partNumber", "versionId"]) => "HeadObject",
        ("PUT", true) if names.is_empty() => "PutObject",
        ("PUT", true) if has("uploadId") && has("partNumber") && names.len() == 2 => "UploadPart",
        ("PUT", true) if names == ["tagging"] => "PutObjectTagging",
        ("POST", true) if names == ["uploads"] => "CreateMultipartUpload",
        ("POST", true) if names == ["uploadId"] => "CompleteMultipartUpload",
        ("DELETE", true) if names == ["uploadId"] => "AbortMultipartUpload",
        ("DELETE", true) if names.is_empty() => "DeleteObject",
        _ => {
            return Err(format!(
                "{} on s3://{}/{}{}{} is not a request hosts may have presigned: reads (GET and HEAD of objects, listings) and writes of objects (PUT, multipart uploads, DELETE) only",
                r.method,
                r.bucket,
                r.key.as_deref().unwrap_or_default(),
                if r.query.is_empty() { "" } else { "?" },
                r.query
            ));
        }
    };
    let method = r
        .method
        .parse()
        .map_err(|_| format!("{:?} is not an HTTP method", r.method))?;
    Ok((method, op))
}

/// The parameter names of an encoded query, checked to be what an S3 client sends: `&`-joined
/// `name[=value]` pairs of unreserved characters and `%XX` escapes, no `X-Amz-*` parameter
/// (those are the signature's).
fn query_names(query: &str) -> Result<Vec<String>, String> {
    if query.is_empty() {
        return Ok(Vec::new());
    }
    let encoded = |s: &str| {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
                {
                    i += 3
                }
                c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => i += 1,
                _ => return false,
            }
        }
        true
    };
    let mut names = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.is_empty() || !encoded(name) || !encoded(value) {
            return Err(format!("the query {query:?} is not an encoded S3 query"));
        }
        if name.to_ascii_lowercase().starts_with("x-amz-") {
            return Err(format!(
                "the query {query:?} carries {name}, which only the server's signature may"
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clary_control::domain::credentials::{Holder, WriteGrant};

    fn req(method: &str, key: Option<&str>, query: &str) -> PresignRequest {
        PresignRequest {
            method: method.into(),
            bucket: "data".into(),
            key: key.map(String::from),
            query: query.into(),
        }
    }

    fn op(method: &str, key: Option<&str>, query: &str) -> Result<&'static str, String> {
        operation(&req(method, key, query)).map(|(_, op)| op)
    }

    #[test]
    fn requests_are_the_s3_operations_their_method_key_and_query_make() {
        assert_eq!(op("GET", Some("a/b c"), ""), Ok("GetObject"));
        assert_eq!(op("HEAD", Some("k"), ""), Ok("HeadObject"));
        assert_eq!(
            op(
                "GET",
                None,
                "list-type=2&prefix=a%2Fb&continuation-token=x%3D%3D"
            ),
            Ok("ListObjectsV2")
        );
        assert_eq!(op("HEAD", None, ""), Ok("HeadBucket"));
        assert_eq!(op("PUT", Some("k"), ""), Ok("PutObject"));
        assert_eq!(
            op("POST", Some("k"), "uploads"),
            Ok("CreateMultipartUpload")
        );
        assert_eq!(
            op("PUT", Some("k"), "partNumber=3&uploadId=2~abc"),
            Ok("UploadPart")
        );
        assert_eq!(
            op("POST", Some("k"), "uploadId=2~abc"),
            Ok("CompleteMultipartUpload")
        );
        assert_eq!(
            op("DELETE", Some("k"), "uploadId=2~abc"),
            Ok("AbortMultipartUpload")
        );
        assert_eq!(op("DELETE", Some("k"), ""), Ok("DeleteObject"));
        // Bucket writes, subresources and signature parameters are not presigned for anyone.
        for (m, k, q) in [
            ("PUT", None, ""),
            ("DELETE", None, ""),
            ("POST", None, "delete"),
            ("PUT", Some("k"), "acl"),
            ("GET", None, "policy"),
            ("GET", Some("k"), "X-Amz-Signature=abc"),
            ("GET", Some("k"), "x=a b"),
            ("GET", Some("k"), "x=%zz"),
            ("PATCH", Some("k"), ""),
        ] {
            assert!(op(m, k, q).is_err(), "{m} {k:?} {q}");
        }
        assert!(op("GET", Some("a/../other"), "").is_err());
        let mut bad = req("GET", Some("k"), "");
        bad.bucket = "Bad/Bucket".into();
        assert!(operation(&bad).is_err());
    }

    fn external(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> std::sync::Arc<ApiState> {
        let store = clary_store::ExternalStore::new(
            clary_store::ExternalStoreConfig {
                endpoint: "http://127.0.0.1:7480".into(),
                bucket_prefix: "team-".into(),
                addressing: clary_store::Addressing::Path,
                region: "us-east-1".into(),
                access_key: "store-ak".into(),
                secret_key: "store-sk".into(),
            },
            rt.handle().clone(),
        )
        .unwrap();
        crate::test_state(
            dir,
            Backing::External(std::sync::Arc::new(store)),
            "AK",
            "SK",
        )
    }

    fn batch(requests: &[PresignRequest]) -> Value {
        serde_json::to_value(PresignBatch {
            requests: requests.to_vec(),
        })
        .unwrap()
    }

    #[test]
    fn urls_come_in_order_for_the_stores_buckets_and_only_with_an_external_store() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let st = external(dir.path(), &rt);
        let answer = handle(
            &st,
            None,
            batch(&[req("GET", Some("a b"), ""), req("GET", None, "list-type=2")]),
        )
        .unwrap();
        let answer: PresignedBatch = serde_json::from_value(answer).unwrap();
        assert_eq!(answer.store, "http://127.0.0.1:7480");
        assert!(
            answer.urls[0].starts_with("http://127.0.0.1:7480/team-data/a%20b?X-Amz-Algorithm=")
        );
        assert!(answer.urls[1].starts_with("http://127.0.0.1:7480/team-data?list-type=2&X-Amz-"));
        assert!(
            answer
                .urls
                .iter()
                .all(|u| u.contains("X-Amz-Signature=") && !u.contains("store-sk"))
        );
        let too_many = vec![req("GET", Some("k"), ""); MAX_BATCH + 1];
        assert!(
            handle(&st, None, batch(&too_many))
                .unwrap_err()
                .to_string()
                .contains("at most 1000")
        );

        let other = dir.path().join("local");
        let local = crate::test_state(
            &other,
            Backing::Local(clary_store::LocalStore::open(other.join("objects")).unwrap()),
            "AK",
            "SK",
        );
        let err = handle(&local, None, batch(&[req("GET", Some("k"), "")])).unwrap_err();
        assert_eq!(err.status_and_code().1, "ValidationException");
        assert!(
            err.to_string().contains("not in an external S3 store"),
            "{err}"
        );
    }

    #[test]
    fn a_scoped_key_gets_reads_anywhere_and_writes_only_under_its_grants() {
        let key = ScopedKey::new(
            Holder::Job {
                kind: clary_control::domain::job::Kind::TrainingJob,
                name: "j1".into(),
            },
            vec![WriteGrant {
                bucket: "data".into(),
                prefix: "out/j1/".into(),
            }],
            &[3u8; 56],
            0.0,
        );
        let may = |m: &str, k: &str, q: &str| {
            let r = req(m, Some(k), q);
            let (_, op) = operation(&r).unwrap();
            access::may_s3(&key, op, Some(&r.bucket), r.key.as_deref())
        };
        assert!(may("GET", "out/j2/output/model.tar.gz", "").is_ok());
        assert!(may("PUT", "out/j1/output/model.tar.gz", "").is_ok());
        assert!(may("PUT", "out/j1/m", "partNumber=1&uploadId=u").is_ok());
        let refused = may("PUT", "out/j2/output/model.tar.gz", "").unwrap_err();
        assert!(
            refused.contains("training job j1")
                && refused.contains("PutObject on s3://data/out/j2/output/model.tar.gz")
                && refused.contains("They write only under s3://data/out/j1/"),
            "{refused}"
        );
        assert!(may("POST", "out/j2/m", "uploads").is_err());
        assert!(may("DELETE", "input/train.csv", "").is_err());
        // Through the call: the whole batch is refused at the request the key may not make.
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let st = external(dir.path(), &rt);
        let err = handle(
            &st,
            Some(&key),
            batch(&[
                req("GET", Some("in/x"), ""),
                req("PUT", Some("out/j2/x"), ""),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.status_and_code(),
            (http::StatusCode::FORBIDDEN, "AccessDenied")
        );
        assert!(
            err.to_string().contains("PutObject on s3://data/out/j2/x"),
            "{err}"
        );
        assert!(handle(&st, Some(&key), batch(&[req("PUT", Some("out/j1/x"), "")])).is_ok());
    }
}
