//! The pure decisions of a [`PresignedStore`](super::PresignedStore): how big objects are cut
//! into ranges and parts, how many requests run at once, and what to do after a request
//! failed (retry after a pause, ask for a fresh URL, or give up).

use std::time::Duration;

const MIB: u64 = 1 << 20;

/// S3's limits on multipart uploads.
const MAX_PARTS: u64 = 10_000;
const MIN_PART: u64 = 5 * MIB;

/// How transfers are sized and spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Bytes per ranged GET of a large object; an object up to this size comes in one GET.
    pub range_size: u64,
    /// Files larger than this go up in parts of at least this size; smaller ones in one PUT.
    pub part_size: u64,
    /// Requests in flight at once for one store call (ranges, parts and objects together).
    pub concurrency: usize,
    /// Tries of one request before its failure is final.
    pub attempts: u32,
    /// A store silent this long while a body is awaited has a broken connection.
    pub silence: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            range_size: 8 * MIB,
            part_size: 8 * MIB,
            concurrency: 32,
            attempts: 5,
            silence: Duration::from_secs(120),
        }
    }
}

impl Tuning {
    /// The defaults, with `CLARY_STORE_CONCURRENCY` (requests in flight) and
    /// `CLARY_STORE_CHUNK_MIB` (range and part size) when set, for tuning to a store.
    pub fn from_env() -> Self {
        let mut t = Tuning::default();
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(n) = var("CLARY_STORE_CONCURRENCY").filter(|n| (1..=256).contains(n)) {
            t.concurrency = n as usize;
        }
        if let Some(m) = var("CLARY_STORE_CHUNK_MIB").filter(|m| (5..=1024).contains(m)) {
            t.range_size = m * MIB;
            t.part_size = m * MIB;
        }
        t
    }
}

/// `(offset, length)` pieces of `chunk` bytes (the last one shorter) covering `start..total`.
pub fn pieces(start: u64, total: u64, chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    let mut at = start;
    while at < total {
        let len = chunk.min(total - at);
        out.push((at, len));
        at += len;
    }
    out
}

/// The part size for a multipart upload of `total` bytes: at least `min`, large enough that
/// the parts fit S3's 10,000, and never under S3's 5 MiB minimum; whole MiB.
pub fn part_size(total: u64, min: u64) -> u64 {
    let needed = total.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    min.max(MIN_PART).max(needed)
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed or broke (refused, reset, timed out, a body cut short).
    Transport(String),
    /// The store answered with an error status and its code.
    Status {
        status: u16,
        code: String,
        message: String,
    },
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same URL again after this pause.
    Retry(Duration),
    /// Ask the server for a fresh URL and try with it (once).
    Represign,
    /// The failure is final.
    Fail,
}

/// Error codes a store answers with when it is busy or failed, whatever the status says.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
];

/// Codes of a refused signature: an expired presigned URL reads as one of these (Ceph RGW and
/// AWS answer 403 AccessDenied, Garage 400), so a fresh URL is worth one try.
const REFUSED_CODES: &[&str] = &[
    "AccessDenied",
    "ExpiredToken",
    "RequestExpired",
    "AuthorizationQueryParametersError",
    "SignatureDoesNotMatch",
];

/// After try number `tried` (from 1) of `attempts` failed with `failure`: transient failures
/// (the connection, 5xx, 429, SlowDown) are retried with a doubling pause; a refused URL is
/// presigned afresh once (it may have expired); anything else is final.
pub fn next_step(failure: &Failure, tried: u32, attempts: u32, represigned: bool) -> Next {
    let transient = match failure {
        Failure::Transport(_) => true,
        Failure::Status { status, code, .. } => {
            *status >= 500 || *status == 429 || TRANSIENT_CODES.contains(&code.as_str())
        }
    };
    if transient {
        return if tried < attempts {
            Next::Retry(backoff(tried))
        } else {
            Next::Fail
        };
    }
    match failure {
        Failure::Status { status, code, .. }
            if !represigned
                && (*status == 403
                    || (*status == 400 && REFUSED_CODES.contains(&code.as_str()))) =>
        {
            Next::Represign
        }
        _ => Next::Fail,
    }
}

/// The pause before retry `tried + 1`: 200 ms, doubling, at most 5 s.
pub fn backoff(tried: u32) -> Duration {
    let ms = 200u64.saturating_mul(1 << tried.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_object_exactly() {
        assert_eq!(pieces(0, 0, 8), []);
        assert_eq!(pieces(0, 8, 8), [(0, 8)]);
        assert_eq!(pieces(0, 20, 8), [(0, 8), (8, 8), (16, 4)]);
        assert_eq!(pieces(8, 20, 8), [(8, 8), (16, 4)]);
        let big = pieces(0, 1_000_000_007, 8 * MIB);
        assert_eq!(big.iter().map(|p| p.1).sum::<u64>(), 1_000_000_007);
        assert!(big.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }

    #[test]
    fn parts_respect_s3s_minimum_and_its_ten_thousand_parts() {
        assert_eq!(part_size(20 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(part_size(20 * MIB, MIB), 5 * MIB);
        // 1 TiB in 8 MiB parts would be 131,072 parts: they grow to fit 10,000.
        let tib = 1 << 40;
        let p = part_size(tib, 8 * MIB);
        assert!(tib.div_ceil(p) <= MAX_PARTS, "{p}");
        assert_eq!(p % MIB, 0);
        assert_eq!(pieces(0, tib, p).len() as u64, tib.div_ceil(p));
    }

    fn status(status: u16, code: &str) -> Failure {
        Failure::Status {
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn transient_failures_are_retried_with_backoff_until_the_attempts_run_out() {
        let reset = Failure::Transport("connection reset".into());
        assert_eq!(
            next_step(&reset, 1, 5, false),
            Next::Retry(Duration::from_millis(200))
        );
        assert_eq!(
            next_step(&reset, 3, 5, false),
            Next::Retry(Duration::from_millis(800))
        );
        assert_eq!(next_step(&reset, 5, 5, false), Next::Fail);
        for f in [
            status(503, "SlowDown"),
            status(500, "InternalError"),
            status(502, "502"),
            status(429, "TooManyRequests"),
            status(400, "RequestTimeout"),
        ] {
            assert!(matches!(next_step(&f, 1, 5, true), Next::Retry(_)), "{f:?}");
        }
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn a_refused_url_is_presigned_afresh_once_and_other_client_errors_are_final() {
        // Ceph RGW's answer to an expired URL: 403 AccessDenied with no message.
        assert_eq!(
            next_step(&status(403, "AccessDenied"), 1, 5, false),
            Next::Represign
        );
        assert_eq!(
            next_step(&status(403, "AccessDenied"), 2, 5, true),
            Next::Fail
        );
        // Garage's: 400.
        assert_eq!(
            next_step(&status(400, "AccessDenied"), 1, 5, false),
            Next::Represign
        );
        for f in [
            status(404, "NoSuchKey"),
            status(412, "PreconditionFailed"),
            status(400, "BadDigest"),
            status(416, "InvalidRange"),
        ] {
            assert_eq!(next_step(&f, 1, 5, false), Next::Fail, "{f:?}");
        }
    }
}
