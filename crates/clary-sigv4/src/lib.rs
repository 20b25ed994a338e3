//! AWS Signature Version 4, both directions.
//!
//! The server verifies every non-S3 request with [`verify`] (s3s verifies S3 itself, but it only
//! knows the `s3` and `sts` scopes). The CLI and the host agent sign their requests with [`sign`].
//! Both directions share the canonicalisation code, so the tests check each against requests
//! signed by botocore and against AWS's published test vectors, never only against each other.

pub mod canonical;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub use canonical::{canonical_query, canonical_uri, uri_encode};

/// How far a request's `X-Amz-Date` may be from the server's clock (AWS uses 15 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request was not accepted. Each variant maps to the AWS error code clients expect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("Request is missing Authentication Token")]
    Missing,
    #[error("Authorization header is malformed: {0}")]
    Malformed(String),
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    SignatureMismatch,
    #[error(
        "Signature expired: {0} is now earlier or later than the server time by more than 15 minutes."
    )]
    Expired(String),
    /// A header whose meaning the signature must cover (a JSON call's operation) is not
    /// among the signed headers, so the request could be replayed as another operation.
    #[error("'{0}' must be a 'SignedHeader' in the AWS Authorization.")]
    UnsignedHeader(&'static str),
}

impl AuthError {
    /// The AWS error code (`__type` / `<Code>`) for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationToken",
            AuthError::Malformed(_) => "IncompleteSignature",
            AuthError::UnknownAccessKey => "InvalidClientTokenId",
            AuthError::SignatureMismatch => "SignatureDoesNotMatch",
            AuthError::Expired(_) | AuthError::UnsignedHeader(_) => "InvalidSignatureException",
        }
    }
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let rest = value
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| AuthError::Malformed(format!("only {ALGORITHM} is supported")))?;
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let (credential, signed, signature) = match (credential, signed, signature) {
            (Some(c), Some(h), Some(s)) => (c, h, s),
            _ => {
                return Err(AuthError::Malformed(
                    "expected Credential=, SignedHeaders= and Signature=".into(),
                ));
            }
        };
        let scope: Vec<&str> = credential.split('/').collect();
        if scope.len() != 5 || scope[4] != "aws4_request" {
            return Err(AuthError::Malformed(format!(
                "credential scope {credential:?} is not AKID/date/region/service/aws4_request"
            )));
        }
        Ok(Authorization {
            access_key: scope[0].to_string(),
            date: scope[1].to_string(),
            region: scope[2].to_string(),
            service: scope[3].to_string(),
            signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.to_ascii_lowercase(),
        })
    }
}

/// Reads the service the credential scope claims without verifying anything, even from an
/// `Authorization` that is otherwise malformed: the server uses it to route a request to the
/// service whose verifier (and whose refusal) applies.
pub fn scope_service(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = value.split("Credential=").nth(1)?;
    let credential = credential.split([',', ' ']).next()?;
    credential
        .split('/')
        .nth(3)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Verifies a header-signed request. `lookup_secret` maps an access key to its secret.
/// Returns the parsed authorization (access key, region, service) when the signature holds.
pub fn verify(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    lookup_secret: impl Fn(&str) -> Option<String>,
) -> Result<Authorization, AuthError> {
    check_headers(headers, now, lookup_secret)?.verify(method, uri, headers, body)
}

/// A request whose `Authorization` is well formed, fresh, names a known key and signs what it
/// must; only the signature over the body is left to check.
#[derive(Debug)]
pub struct PendingSignature {
    auth: Authorization,
    amz_date: String,
    secret: String,
}

/// Everything about a request's signature that its headers alone decide, so a server can
/// refuse a request before it reads (and buffers) its body.
pub fn check_headers(
    headers: &http::HeaderMap,
    now: DateTime<Utc>,
    lookup_secret: impl Fn(&str) -> Option<String>,
) -> Result<PendingSignature, AuthError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed("Authorization is not ASCII".into()))?;
    let auth = Authorization::parse(header)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AuthError::Malformed("X-Amz-Date header is missing".into()))?;
    let when = parse_amz_date(amz_date)?;
    if (now - when).num_seconds().abs() > MAX_CLOCK_SKEW_SECS {
        return Err(AuthError::Expired(amz_date.to_string()));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(AuthError::Malformed(
            "the credential scope date does not match X-Amz-Date".into(),
        ));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Malformed(
            "the host header must be signed".into(),
        ));
    }
    if headers.contains_key("x-amz-target")
        && !auth.signed_headers.iter().any(|h| h == "x-amz-target")
    {
        return Err(AuthError::UnsignedHeader("X-Amz-Target"));
    }
    let secret = lookup_secret(&auth.access_key).ok_or(AuthError::UnknownAccessKey)?;
    Ok(PendingSignature {
        auth,
        amz_date: amz_date.to_string(),
        secret,
    })
}

impl PendingSignature {
    pub fn authorization(&self) -> &Authorization {
        &self.auth
    }

    /// Checks the signature over the whole request, body included.
    pub fn verify(
        self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Authorization, AuthError> {
        let auth = self.auth;
        let payload_hash = match headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
        {
            Some(h) if auth.service == "s3" => h.to_string(),
            _ => hex::encode(Sha256::digest(body)),
        };
        let canonical = canonical::canonical_request(
            method.as_str(),
            uri,
            headers,
            &auth.signed_headers,
            &payload_hash,
            auth.service == "s3",
        )
        .map_err(AuthError::Malformed)?;
        let expected = signature(
            &self.secret,
            &self.amz_date,
            &auth.date,
            &auth.region,
            &auth.service,
            &canonical,
        );
        if subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), auth.signature.as_bytes()).into() {
            Ok(auth)
        } else {
            Err(AuthError::SignatureMismatch)
        }
    }
}

/// Credentials and scope for signing outgoing requests.
#[derive(Debug, Clone)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Signer {
    /// Adds `X-Amz-Date`, `X-Amz-Content-SHA256` and `Authorization` to `headers`, signing
    /// every header already present plus `host`. `host` is taken from the URI.
    pub fn sign(
        &self,
        service: &str,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let hash = hex::encode(Sha256::digest(body));
        self.sign_with_payload_hash(service, method, uri, headers, &hash, now)
    }

    /// Like [`sign`](Self::sign) with a precomputed payload hash, or `UNSIGNED-PAYLOAD` for S3
    /// bodies streamed from disk.
    pub fn sign_with_payload_hash(
        &self,
        service: &str,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
        payload_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let host = uri
            .authority()
            .ok_or("the URI has no host")?
            .as_str()
            .to_string();
        headers.insert(http::header::HOST, header_value(&host)?);
        headers.insert("x-amz-date", header_value(&amz_date)?);
        headers.insert("x-amz-content-sha256", header_value(payload_hash)?);
        let mut signed: Vec<String> = headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k != "authorization" && k != "user-agent" && k != "expect")
            .collect();
        signed.sort();
        signed.dedup();
        let canonical = canonical::canonical_request(
            method.as_str(),
            uri,
            headers,
            &signed,
            payload_hash,
            service == "s3",
        )?;
        let sig = signature(
            &self.secret_key,
            &amz_date,
            date,
            &self.region,
            service,
            &canonical,
        );
        let auth = format!(
            "{ALGORITHM} Credential={}/{date}/{}/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
            self.access_key,
            self.region,
            signed.join(";")
        );
        headers.insert(http::header::AUTHORIZATION, header_value(&auth)?);
        Ok(())
    }
}

impl Signer {
    /// A presigned URL for `method` on `url` (scheme, host, path already encoded as S3 signs
    /// it, and any query), valid for `expires_secs` from `now`: SigV4 in the query string,
    /// signing only `host`, with an unsigned payload, the way botocore's `generate_presigned_url`
    /// does. Whoever holds the URL may make that one request and no other.
    pub fn presign(
        &self,
        service: &str,
        method: &http::Method,
        url: &str,
        expires_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let credential = format!(
            "{}/{date}/{}/{service}/aws4_request",
            self.access_key, self.region
        );
        let auth_query = format!(
            "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires_secs}&X-Amz-SignedHeaders=host",
            uri_encode(&credential)
        );
        let unsigned: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let with_auth = match unsigned.query() {
            Some(q) if !q.is_empty() => format!("{url}&{auth_query}"),
            _ => format!("{}?{auth_query}", url.trim_end_matches('?')),
        };
        let uri: http::Uri = with_auth
            .parse()
            .map_err(|e| format!("bad URL {with_auth}: {e}"))?;
        let host = uri.authority().ok_or("the URL has no host")?.as_str();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, header_value(host)?);
        let canonical = canonical::canonical_request(
            method.as_str(),
            &uri,
            &headers,
            &["host".to_string()],
            "UNSIGNED-PAYLOAD",
            service == "s3",
        )?;
        let sig = signature(
            &self.secret_key,
            &amz_date,
            date,
            &self.region,
            service,
            &canonical,
        );
        Ok(format!("{with_auth}&X-Amz-Signature={sig}"))
    }
}

fn header_value(s: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(s).map_err(|e| format!("invalid header value {s:?}: {e}"))
}

fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, AuthError> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc())
        .map_err(|_| AuthError::Malformed(format!("X-Amz-Date {s:?} is not YYYYMMDDTHHMMSSZ")))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The hex signature of `canonical_request` under the given scope.
pub fn signature(
    secret: &str,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    hex::encode(hmac(&k_signing, &string_to_sign))
}

#[cfg(test)]
mod tests;
