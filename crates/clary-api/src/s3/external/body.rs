//! A client's upload on its way to the store, chunk by chunk, never whole in memory. The store
//! may not check the CRC32 or SHA-256 a client sent (Ceph RGW pacific ignores
//! `x-amz-checksum-*`), so Clary checks them as the bytes pass and holds the last chunk back
//! until they match: a body that fails its check, or a client that goes away mid-upload, cuts
//! the request to the store short of its `Content-Length`, and the store keeps nothing of it.

use crate::s3::checksums::{check_checksum, sent_checksum};
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// What a client said about its body: its length and the checksums it sent in headers; with
/// an aws-chunked upload, the trailer that may carry them after the last chunk.
#[derive(Default)]
pub(super) struct Expected {
    pub length: Option<u64>,
    pub crc32: Option<String>,
    pub sha256: Option<String>,
    pub trailers: Option<s3s::TrailingHeaders>,
}

/// Why a body's passage to the store stopped short: read after the store's request ended,
/// since the body's own error only reaches reqwest, which reports it as a broken request.
#[derive(Clone, Default)]
pub(super) struct Verdict(Arc<Mutex<Option<S3Error>>>);

impl Verdict {
    fn fail(&self, e: S3Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// The reason the body was cut short, if it was.
    pub fn take(&self) -> Option<S3Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

struct Passage {
    body: StreamingBlob,
    expected: Expected,
    verdict: Verdict,
    held: Option<Bytes>,
    crc32: crc32fast::Hasher,
    sha256: Option<Sha256>,
    seen: u64,
    done: bool,
}

impl Passage {
    fn take_in(&mut self, chunk: &Bytes) -> Result<(), S3Error> {
        self.crc32.update(chunk);
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        self.seen += chunk.len() as u64;
        match self.expected.length {
            Some(len) if self.seen > len => Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("The request body is longer than its Content-Length of {len} bytes."),
            )),
            _ => Ok(()),
        }
    }

    /// At the body's end: its length and the checksums the client sent, header or trailer.
    fn check(&mut self) -> Result<(), S3Error> {
        if let Some(len) = self.expected.length
            && self.seen != len
        {
            return Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!(
                    "The request body ended after {} of its {len} bytes.",
                    self.seen
                ),
            ));
        }
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let e = &self.expected;
        let crc32 = sent_checksum(&e.crc32, &e.trailers, "x-amz-checksum-crc32");
        let computed = b64(&self.crc32.clone().finalize().to_be_bytes());
        check_checksum(&crc32, &computed, "CRC32")?;
        let sha256 = sent_checksum(&e.sha256, &e.trailers, "x-amz-checksum-sha256");
        if let (Some(_), Some(h)) = (&sha256, self.sha256.take()) {
            check_checksum(&sha256, &b64(&h.finalize()), "SHA256")?;
        }
        Ok(())
    }
}

fn cut(reason: &str) -> std::io::Error {
    std::io::Error::other(reason.to_string())
}

/// `body` as it goes on to the store; a failed check lands in `verdict`.
pub(super) fn checked(
    body: StreamingBlob,
    expected: Expected,
    verdict: Verdict,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    // SHA-256 costs more than CRC32: only when the client may have sent one.
    let sha256 = (expected.sha256.is_some() || expected.trailers.is_some()).then(Sha256::new);
    let passage = Passage {
        body,
        expected,
        verdict,
        held: None,
        crc32: crc32fast::Hasher::new(),
        sha256,
        seen: 0,
        done: false,
    };
    futures::stream::unfold(passage, |mut p| async move {
        if p.done {
            return None;
        }
        loop {
            match p.body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    if let Err(e) = p.take_in(&chunk) {
                        p.verdict.fail(e);
                        p.done = true;
                        return Some((Err(cut("the body is too long")), p));
                    }
                    if let Some(previous) = p.held.replace(chunk) {
                        return Some((Ok(previous), p));
                    }
                }
                Some(Err(e)) => {
                    // The client went away or sent a broken body: the store must not get
                    // what came so far as a whole object.
                    p.verdict.fail(S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("The request body could not be read: {e}"),
                    ));
                    p.done = true;
                    return Some((Err(cut("the client's body broke off")), p));
                }
                None => {
                    p.done = true;
                    return match p.check() {
                        Ok(()) => p.held.take().map(|last| (Ok(last), p)),
                        Err(e) => {
                            p.verdict.fail(e);
                            Some((Err(cut("the body failed its check")), p))
                        }
                    };
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(chunks: &[&'static [u8]]) -> StreamingBlob {
        let items: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        StreamingBlob::wrap(futures::stream::iter(items))
    }

    fn crc32_b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(data).to_be_bytes())
    }

    /// What the store would receive, and whether the stream ended in an error.
    fn run(chunks: &[&'static [u8]], expected: Expected) -> (Vec<u8>, bool, Option<S3Error>) {
        let verdict = Verdict::default();
        let stream = checked(blob(chunks), expected, verdict.clone());
        let items: Vec<_> = futures::executor::block_on(stream.collect());
        let mut got = Vec::new();
        let mut failed = false;
        for item in items {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => failed = true,
            }
        }
        (got, failed, verdict.take())
    }

    #[test]
    fn a_body_that_matches_passes_whole() {
        let chunks: &[&'static [u8]] = &[b"hello ", b"", b"wor", b"ld"];
        let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"hello world"));
        let (got, failed, verdict) = run(
            chunks,
            Expected {
                length: Some(11),
                crc32: Some(crc32_b64(b"hello world")),
                sha256: Some(sha),
                trailers: None,
            },
        );
        assert_eq!(got, b"hello world");
        assert!(!failed);
        assert!(verdict.is_none());
    }

    #[test]
    fn a_mismatching_checksum_never_lets_the_last_chunk_through() {
        let (got, failed, verdict) = run(
            &[b"hello ", b"world"],
            Expected {
                length: Some(11),
                crc32: Some(crc32_b64(b"something else")),
                ..Expected::default()
            },
        );
        assert_eq!(got, b"hello ");
        assert!(failed);
        assert_eq!(*verdict.unwrap().code(), S3ErrorCode::BadDigest);
        let (got, failed, verdict) = run(
            &[b"x"],
            Expected {
                length: Some(1),
                sha256: Some("AAAA".into()),
                ..Expected::default()
            },
        );
        assert!(got.is_empty() && failed);
        assert_eq!(*verdict.unwrap().code(), S3ErrorCode::BadDigest);
    }

    #[test]
    fn a_body_shorter_or_longer_than_declared_is_cut() {
        let (got, failed, verdict) = run(
            &[b"abc", b"def"],
            Expected {
                length: Some(10),
                ..Expected::default()
            },
        );
        assert_eq!(got, b"abc");
        assert!(failed);
        assert_eq!(*verdict.unwrap().code(), S3ErrorCode::IncompleteBody);
        let (got, failed, verdict) = run(
            &[b"abc", b"def"],
            Expected {
                length: Some(4),
                ..Expected::default()
            },
        );
        assert!(got.len() < 4 && failed);
        assert_eq!(*verdict.unwrap().code(), S3ErrorCode::IncompleteBody);
    }

    #[test]
    fn a_client_that_goes_away_cuts_the_body() {
        let items: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
        ];
        let verdict = Verdict::default();
        let stream = checked(
            StreamingBlob::wrap(futures::stream::iter(items)),
            Expected::default(),
            verdict.clone(),
        );
        let out: Vec<_> = futures::executor::block_on(stream.collect());
        assert!(out.iter().all(|r| r.is_err()), "nothing was let through");
        assert_eq!(*verdict.take().unwrap().code(), S3ErrorCode::IncompleteBody);
    }
}
