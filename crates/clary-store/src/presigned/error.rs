//! Why a request straight to the external store failed, in words a job's `FailureReason` can
//! carry: the store's status and error code (with what the code means, since Ceph RGW sends
//! no message), a broken connection, or the server's refusal to presign.

use super::plan::Failure;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The store answered with an error status.
    #[error("HTTP {status} {code}{}", explain(.code, .message))]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// The store could not be reached, or the connection broke, on every try.
    #[error("the connection failed: {0}")]
    Transport(String),
    /// The server did not presign the request (a refusal names what the key may not do).
    #[error("the server did not presign the request: {0}")]
    Presign(String),
    /// The store answered something that is not what S3 answers.
    #[error("the store's answer is not understood: {0}")]
    Answer(String),
    /// A local file (a download's target, an upload's source) failed.
    #[error("{what}: {source}")]
    File { what: String, source: io::Error },
}

impl From<Failure> for DirectError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Transport(e) => DirectError::Transport(e),
            Failure::Status {
                status,
                code,
                message,
            } => DirectError::Status {
                status,
                code,
                message,
            },
        }
    }
}

/// `: <message>`, or what a well-known code means when the store sent no message.
fn explain(code: &str, message: &str) -> String {
    if !message.trim().is_empty() {
        return format!(": {}", message.trim());
    }
    let meaning = match code {
        "NoSuchKey" => "the object does not exist (deleted or never written)",
        "NoSuchBucket" => "the bucket does not exist in the store",
        "NoSuchUpload" => "the multipart upload does not exist (completed or aborted)",
        "AccessDenied" => "the store refused the request's presigned URL",
        "PreconditionFailed" => "the object changed while it was being read",
        "InvalidRange" => "the object is shorter than the range asked for",
        "SlowDown" | "ServiceUnavailable" => "the store is overloaded; it stayed so on every try",
        "BadDigest" => "the bytes the store received do not match their Content-MD5",
        "EntityTooSmall" => "a part is smaller than the store's minimum",
        _ => return String::new(),
    };
    format!(": {meaning}")
}

/// A transport error without the URL (a presigned URL is a credential for its request) but
/// with its causes, which say what actually broke.
pub fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_says_its_code_and_what_it_means_when_the_store_says_nothing() {
        let e = DirectError::Status {
            status: 404,
            code: "NoSuchKey".into(),
            message: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "HTTP 404 NoSuchKey: the object does not exist (deleted or never written)"
        );
        let e = DirectError::Status {
            status: 404,
            code: "NoSuchKey".into(),
            message: "The specified key does not exist.".into(),
        };
        assert_eq!(
            e.to_string(),
            "HTTP 404 NoSuchKey: The specified key does not exist."
        );
        let e = DirectError::Status {
            status: 418,
            code: "418".into(),
            message: String::new(),
        };
        assert_eq!(e.to_string(), "HTTP 418 418");
    }
}
