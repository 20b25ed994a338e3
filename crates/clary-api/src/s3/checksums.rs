//! S3 checksums: which one a request sent, checking it, and which one a response returns.

use super::*;

/// A stored whole-object checksum, returned only when the client asked for checksums
/// (`x-amz-checksum-mode: ENABLED`) and the response carries the whole object.
pub(super) fn returned_checksum(enabled: bool, stored: &Option<String>) -> Option<String> {
    if enabled { stored.clone() } else { None }
}

/// `aws-chunked` is the framing of the request body, not an encoding of the object: S3 drops it
/// from the stored `Content-Encoding` (keeping, say, `gzip` from `aws-chunked,gzip`).
pub(super) fn without_aws_chunked(encoding: &str) -> Option<String> {
    let rest: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!rest.is_empty()).then(|| rest.join(","))
}

/// The checksum a client sent for the body: in a header, or (aws-chunked uploads, which boto3
/// makes over https) in the trailer that follows the last chunk.
pub(super) fn sent_checksum(
    header: &Option<String>,
    trailers: &Option<s3s::TrailingHeaders>,
    name: &str,
) -> Option<String> {
    header.clone().or_else(|| {
        trailers.as_ref().and_then(|t| {
            t.read(|h| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string())
            })
            .flatten()
        })
    })
}

pub(super) fn check_checksum(given: &Option<String>, computed: &str, name: &str) -> S3Result<()> {
    match given {
        Some(g) if g != computed => Err(S3Error::with_message(
            S3ErrorCode::BadDigest,
            format!("The {name} you specified did not match the calculated checksum."),
        )),
        _ => Ok(()),
    }
}

pub(super) fn base64_of_hex(hex_str: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_str).unwrap_or_default())
}
