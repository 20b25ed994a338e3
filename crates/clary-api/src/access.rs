//! Who may do what. The server's own key pair may do everything. A key scoped to a training
//! job or an endpoint instance (`clary_control::domain::credentials`) may make the agents'
//! calls about its own holder, read objects, and write objects only under its grants; every
//! other call gets AWS's `AccessDenied`, naming the key's holder.

use clary_control::ControlPlane;
use clary_control::domain::credentials::{Holder, ScopedKey};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use serde_json::Value;
use std::sync::Arc;

/// The server's key pair and the control plane that knows the scoped ones.
#[derive(Clone)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
    pub control: Arc<ControlPlane>,
}

fn holder_name(h: &Holder) -> String {
    match h {
        Holder::Job { kind, name } => {
            format!("{} {name}", kind.words().noun.to_lowercase())
        }
        Holder::EndpointInstance { endpoint, instance } => {
            format!("instance {instance} of endpoint {endpoint}")
        }
    }
}

impl Keys {
    /// The secret of `access_key` and, for a scoped key, the key itself (`None` for the
    /// server's own pair); `None` for a key nobody holds.
    pub fn resolve(&self, access_key: &str) -> Option<(String, Option<ScopedKey>)> {
        if access_key == self.access_key {
            return Some((self.secret_key.clone(), None));
        }
        let key = self.control.scoped_key(access_key)?;
        Some((key.secret_key.clone(), Some(key)))
    }

    /// The secret of `access_key`: the server's own, or a live scoped key's.
    pub fn secret_for(&self, access_key: &str) -> Option<String> {
        self.resolve(access_key).map(|(secret, _)| secret)
    }

    /// The scoped key behind a verified `access_key`; `None` for the server's own pair.
    pub fn scoped(&self, access_key: &str) -> Option<ScopedKey> {
        (access_key != self.access_key)
            .then(|| self.control.scoped_key(access_key))
            .flatten()
    }
}

/// Why a scoped key may not make `what`.
pub fn denied(key: &ScopedKey, what: &str) -> String {
    format!(
        "The credentials of {} are scoped to it: they may not {what}. Use the server's own credentials (clary env) for that.",
        holder_name(&key.holder)
    )
}

/// Whether a scoped key may make the agents' call `op` with `body`.
pub fn may_call_agent_api(key: &ScopedKey, op: &str, body: &Value) -> bool {
    let field = |k: &str| body.get(k).and_then(Value::as_str);
    match op {
        "ReportStatus" | "PutLogLines" | "ReportResult" | "GetHostSpec" | "ReportSystemMetrics" => {
            let kind = crate::json_api::call_kind(body).ok();
            key.may_report(kind.zip(field("JobName")), None)
        }
        "GetModelServerSpec" | "ReportInstance" => key.may_report(None, field("InstanceId")),
        // Each request of the batch is checked against the key's grants (`may_s3`).
        clary_store::presigned::PRESIGN_OP => true,
        _ => false,
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.secret_for(access_key)
            .map(SecretKey::from)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

/// S3 operations a scoped key may make anywhere: reads.
const READS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "GetObjectTagging",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "HeadBucket",
    "GetBucketLocation",
    "ListBuckets",
    "ListParts",
    "ListMultipartUploads",
];

/// S3 operations on one object a scoped key may make under its write grants.
const OBJECT_WRITES: &[&str] = &[
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
    "PutObjectTagging",
];

/// Whether a scoped key may make the S3 operation `op` on `bucket` (and `object`, for an
/// object's operation): reads anywhere, writes to an object only under its grants. `Err` is
/// the message of AWS's `AccessDenied`, naming the target and where the key may write. The
/// S3 API and the presigning of hosts' requests (`presign_api`) both ask here.
pub fn may_s3(
    key: &ScopedKey,
    op: &str,
    bucket: Option<&str>,
    object: Option<&str>,
) -> Result<(), String> {
    if READS.contains(&op) {
        return Ok(());
    }
    if OBJECT_WRITES.contains(&op)
        && let (Some(bucket), Some(object)) = (bucket, object)
        && key.may_write(bucket, object)
    {
        return Ok(());
    }
    let target = match (bucket, object) {
        (Some(bucket), Some(key)) => format!("s3://{bucket}/{key}"),
        (Some(bucket), None) => format!("s3://{bucket}"),
        _ => "the account's buckets".into(),
    };
    let grants: Vec<String> = key
        .writes
        .iter()
        .map(|g| format!("s3://{}/{}", g.bucket, g.prefix))
        .collect();
    let mut message = denied(key, &format!("call {op} on {target}"));
    if !grants.is_empty() {
        message.push_str(&format!(" They write only under {}.", grants.join(", ")));
    }
    Err(message)
}

#[async_trait::async_trait]
impl S3Access for Keys {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Requests must be signed"));
        };
        let Some(key) = self.scoped(&credentials.access_key) else {
            return Ok(());
        };
        let (bucket, object) = match cx.s3_path() {
            S3Path::Object { bucket, key } => (Some(bucket.as_ref()), Some(key.as_ref())),
            S3Path::Bucket { bucket } => (Some(bucket.as_ref()), None),
            S3Path::Root => (None, None),
        };
        may_s3(&key, cx.s3_op().name(), bucket, object)
            .map_err(|message| s3s::S3Error::with_message(s3s::S3ErrorCode::AccessDenied, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clary_control::domain::credentials::WriteGrant;

    #[test]
    fn a_job_key_makes_only_its_own_jobs_agent_calls() {
        let key = ScopedKey::new(
            Holder::Job {
                kind: clary_control::domain::job::Kind::TrainingJob,
                name: "j1".into(),
            },
            vec![WriteGrant {
                bucket: "b".into(),
                prefix: "out/j1/".into(),
            }],
            &[3u8; 56],
            0.0,
        );
        let body = |job: &str| serde_json::json!({"JobName": job});
        assert!(may_call_agent_api(&key, "PutLogLines", &body("j1")));
        assert!(may_call_agent_api(&key, "GetHostSpec", &body("j1")));
        assert!(!may_call_agent_api(&key, "PutLogLines", &body("j2")));
        assert!(!may_call_agent_api(&key, "GetModelServerSpec", &body("j1")));
        assert!(!may_call_agent_api(&key, "SomethingElse", &body("j1")));
        assert!(denied(&key, "call CreateTrainingJob").contains("training job j1"));
    }
}
