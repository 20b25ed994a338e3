//! The store's failures as the S3 errors Clary's clients get, in one place: the store's code
//! and status pass through; its message does too (AWS's usual one where the store gives none,
//! as Ceph RGW often does), with the store's bucket names shown as Clary's; a store that cannot
//! be reached is a 503 that names the store's endpoint, never its keys.

use clary_client::{ClientError, ServiceError};
use clary_store::ExternalStore;
use s3s::{S3Error, S3ErrorCode};

/// What a request to the store was about: the Clary buckets its messages may name, and the
/// code of a 404 whose answer has no S3 error body (a `HEAD`'s).
#[derive(Debug, Clone)]
pub(super) struct About {
    pub buckets: Vec<String>,
    pub not_found: S3ErrorCode,
}

/// The S3 error for a request to the store that did not succeed.
pub(super) fn store_failure(store: &ExternalStore, e: ClientError, about: &About) -> S3Error {
    match e {
        ClientError::S3(answer) => store_error(store, answer, about),
        ClientError::Transport(e) => unreachable(store, &e),
        // A request Clary could not build (a header value the signer refused, say): the
        // client's input, which s3s has already checked, so it is Clary's failure.
        other => {
            tracing::error!(store = %store.describe(), "a request to the object store failed: {other}");
            S3Error::with_message(
                S3ErrorCode::InternalError,
                "We encountered an internal error. Please try again.",
            )
        }
    }
}

/// A store that did not answer: 503, naming the store (its endpoint and bucket prefix); the
/// detail goes to the server's log.
pub(super) fn unreachable(store: &ExternalStore, detail: &dyn std::error::Error) -> S3Error {
    let mut chain = detail.to_string();
    let mut source = detail.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(store = %store.describe(), "the object store could not be reached: {chain}");
    let mut e = S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        format!(
            "Clary could not reach {}; please try again later.",
            store.describe()
        ),
    );
    e.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    e
}

/// A success from the store whose body Clary cannot read: the store is not speaking S3 as
/// expected; the detail goes to the server's log.
pub(super) fn unreadable(store: &ExternalStore, what: &str, detail: &str) -> S3Error {
    tracing::error!(store = %store.describe(), "the object store's answer to {what} could not be read: {detail}");
    S3Error::with_message(
        S3ErrorCode::InternalError,
        format!(
            "The answer of {} to {what} could not be read.",
            store.describe()
        ),
    )
}

/// The store's S3 error answer as Clary's.
pub(super) fn store_error(store: &ExternalStore, answer: ServiceError, about: &About) -> S3Error {
    let code = if answer.code.bytes().all(|b| b.is_ascii_digit()) {
        code_of_status(answer.status, &about.not_found)
    } else {
        S3ErrorCode::from_bytes(answer.code.as_bytes())
            .unwrap_or_else(|| code_of_status(answer.status, &about.not_found))
    };
    let message = if answer.message.trim().is_empty() {
        usual_message(&code)
    } else {
        clary_names(store, &answer.message, &about.buckets)
    };
    let mut e = S3Error::with_message(code, message);
    e.set_status_code(answer.status);
    e
}

/// The code of an answer without an S3 error body.
fn code_of_status(status: http::StatusCode, not_found: &S3ErrorCode) -> S3ErrorCode {
    match status.as_u16() {
        304 => S3ErrorCode::NotModified,
        400 => S3ErrorCode::InvalidRequest,
        403 => S3ErrorCode::AccessDenied,
        404 => not_found.clone(),
        405 => S3ErrorCode::MethodNotAllowed,
        409 => S3ErrorCode::OperationAborted,
        411 => S3ErrorCode::MissingContentLength,
        412 => S3ErrorCode::PreconditionFailed,
        416 => S3ErrorCode::InvalidRange,
        501 => S3ErrorCode::NotImplemented,
        503 => S3ErrorCode::ServiceUnavailable,
        _ => S3ErrorCode::InternalError,
    }
}

/// AWS's message for a code, for a store that answers with a code alone.
fn usual_message(code: &S3ErrorCode) -> String {
    let m = match code {
        S3ErrorCode::NoSuchKey => "The specified key does not exist.",
        S3ErrorCode::NoSuchBucket => "The specified bucket does not exist",
        S3ErrorCode::NoSuchUpload => {
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        }
        S3ErrorCode::InvalidPart => {
            "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
        }
        S3ErrorCode::InvalidPartOrder => {
            "The list of parts was not in ascending order. The parts list must be specified in order by part number."
        }
        S3ErrorCode::EntityTooSmall => {
            "Your proposed upload is smaller than the minimum allowed object size."
        }
        S3ErrorCode::EntityTooLarge => {
            "Your proposed upload exceeds the maximum allowed object size."
        }
        S3ErrorCode::BucketNotEmpty => "The bucket you tried to delete is not empty",
        S3ErrorCode::BucketAlreadyExists => {
            "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."
        }
        S3ErrorCode::BucketAlreadyOwnedByYou => {
            "Your previous request to create the named bucket succeeded and you already own it."
        }
        S3ErrorCode::PreconditionFailed => {
            "At least one of the pre-conditions you specified did not hold"
        }
        S3ErrorCode::NotModified => "Not Modified",
        S3ErrorCode::InvalidRange => "The requested range is not satisfiable",
        S3ErrorCode::AccessDenied => "Access Denied",
        S3ErrorCode::BadDigest => "The Content-MD5 you specified did not match what we received.",
        S3ErrorCode::InvalidDigest => "The Content-MD5 you specified is not valid.",
        S3ErrorCode::InvalidBucketName => "The specified bucket is not valid.",
        S3ErrorCode::MalformedXML => {
            "The XML you provided was not well-formed or did not validate against our published schema"
        }
        S3ErrorCode::InvalidArgument => "Invalid Argument",
        S3ErrorCode::InvalidRequest => "Invalid Request",
        S3ErrorCode::KeyTooLongError => "Your key is too long",
        S3ErrorCode::SlowDown => "Please reduce your request rate.",
        S3ErrorCode::ServiceUnavailable => "Please reduce your request rate.",
        S3ErrorCode::InternalError => "We encountered an internal error. Please try again.",
        other => return format!("The object store answered {}.", other.as_str()),
    };
    m.to_string()
}

/// `message` with each of the store's names for `buckets` replaced by Clary's.
fn clary_names(store: &ExternalStore, message: &str, buckets: &[String]) -> String {
    let mut out = message.to_string();
    for b in buckets {
        let theirs = store.store_bucket(b);
        if theirs != *b {
            out = out.replace(&theirs, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clary_store::{Addressing, ExternalStoreConfig};

    fn store() -> (ExternalStore, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = ExternalStore::new(
            ExternalStoreConfig {
                endpoint: "http://127.0.0.1:7480".into(),
                bucket_prefix: "team-".into(),
                addressing: Addressing::Path,
                region: "us-east-1".into(),
                access_key: "AKSTORE".into(),
                secret_key: "store-secret".into(),
            },
            rt.handle().clone(),
        )
        .unwrap();
        (s, rt)
    }

    fn about(bucket: &str, not_found: S3ErrorCode) -> About {
        About {
            buckets: vec![bucket.into()],
            not_found,
        }
    }

    fn answer(status: u16, code: &str, message: &str) -> ServiceError {
        ServiceError {
            status: http::StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn the_stores_code_and_status_pass_through_with_clary_bucket_names() {
        let (s, _rt) = store();
        let e = store_error(
            &s,
            answer(409, "BucketNotEmpty", "bucket team-data is not empty"),
            &about("data", S3ErrorCode::NoSuchKey),
        );
        assert_eq!(*e.code(), S3ErrorCode::BucketNotEmpty);
        assert_eq!(e.status_code(), Some(http::StatusCode::CONFLICT));
        assert_eq!(e.message(), Some("bucket data is not empty"));
        // A code s3s does not know stays as the store spelled it, with the store's status.
        let e = store_error(
            &s,
            answer(400, "XAmzContentSHA256Mismatch", "x"),
            &about("data", S3ErrorCode::NoSuchKey),
        );
        assert_eq!(e.code().as_str(), "XAmzContentSHA256Mismatch");
        assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
    }

    #[test]
    fn a_code_without_a_message_gets_the_usual_one() {
        let (s, _rt) = store();
        for (status, code, word) in [
            (404, "NoSuchKey", "key does not exist"),
            (404, "NoSuchUpload", "upload does not exist"),
            (400, "InvalidPart", "parts could not be found"),
            (400, "EntityTooSmall", "smaller than the minimum"),
            (412, "PreconditionFailed", "pre-conditions"),
            (416, "InvalidRange", "not satisfiable"),
            (400, "WeirdOne", "answered WeirdOne"),
        ] {
            let e = store_error(
                &s,
                answer(status, code, ""),
                &about("b", S3ErrorCode::NoSuchKey),
            );
            assert_eq!(e.code().as_str(), code);
            assert!(e.message().unwrap().contains(word), "{code}: {e:?}");
        }
    }

    #[test]
    fn an_answer_without_an_error_body_is_named_by_its_status() {
        let (s, _rt) = store();
        let head_bucket = about("b", S3ErrorCode::NoSuchBucket);
        let head_object = about("b", S3ErrorCode::NoSuchKey);
        let e = store_error(&s, answer(404, "404", ""), &head_bucket);
        assert_eq!(*e.code(), S3ErrorCode::NoSuchBucket);
        let e = store_error(&s, answer(404, "404", ""), &head_object);
        assert_eq!(*e.code(), S3ErrorCode::NoSuchKey);
        assert_eq!(e.status_code(), Some(http::StatusCode::NOT_FOUND));
        let e = store_error(&s, answer(304, "304", ""), &head_object);
        assert_eq!(*e.code(), S3ErrorCode::NotModified);
        assert_eq!(e.status_code(), Some(http::StatusCode::NOT_MODIFIED));
        let e = store_error(&s, answer(403, "403", ""), &head_object);
        assert_eq!(*e.code(), S3ErrorCode::AccessDenied);
        let e = store_error(&s, answer(502, "502", "bad gateway page"), &head_object);
        assert_eq!(*e.code(), S3ErrorCode::InternalError);
        assert_eq!(e.status_code(), Some(http::StatusCode::BAD_GATEWAY));
    }

    #[test]
    fn an_unreachable_store_is_a_503_naming_the_endpoint_and_never_the_keys() {
        let (s, _rt) = store();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = unreachable(&s, &io);
        assert_eq!(*e.code(), S3ErrorCode::ServiceUnavailable);
        assert_eq!(e.status_code(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        let m = e.message().unwrap();
        assert!(m.contains("http://127.0.0.1:7480"), "{m}");
        assert!(!m.contains("AKSTORE") && !m.contains("store-secret"), "{m}");
    }
}
