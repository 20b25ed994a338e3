//! Where Clary keeps its state, its key pair, and how clients find a running server.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_REGION: &str = "us-east-1";

/// `$XDG_DATA_HOME/clary`, else `~/.local/share/clary`.
pub fn default_data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("XDG_DATA_HOME")
        && !d.is_empty()
    {
        return PathBuf::from(d).join("clary");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".local/share/clary")
}

/// Creates the data directory private to this user (0700 from its creation), and makes an
/// existing one private: it holds the key pair, the database and every object.
pub fn prepare_data_dir(data_dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making the data dir {} private", data_dir.display()))
}

/// Replaces `path` with `bytes` atomically, the file being 0600 from the open(2) that creates
/// it, so no other user ever sees its contents, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a crashed writer that had this PID goes; create_new then guarantees the
    // file is ours and 0600 from the start.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// The key pair and account, generated on first start and kept in the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub access_key: String,
    pub secret_key: String,
    pub account: String,
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < n {
                out.push(alphabet[*b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

impl Identity {
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("identity.json");
        if let Ok(bytes) = std::fs::read(&path) {
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not valid; remove it to generate a new key pair",
                    path.display()
                )
            });
        }
        prepare_data_dir(data_dir)?;
        let id = Identity {
            access_key: format!(
                "AKCL{}",
                random_chars(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
            ),
            secret_key: random_chars(
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            ),
            account: random_chars(12, b"0123456789").replacen('0', "1", 1),
        };
        write_private(&path, &serde_json::to_vec_pretty(&id)?)?;
        Ok(id)
    }

    /// The bucket the generated SDK config names as `DefaultS3Bucket` (SageMaker's own naming).
    pub fn default_bucket(&self, region: &str) -> String {
        format!("sagemaker-{region}-{}", self.account)
    }
}

/// What a running server publishes for `clary env` and the CLI (in a 0600 file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub region: String,
    pub pid: u32,
    /// The key pair the server verifies with: `--access-key/--secret-key` when given, which
    /// `identity.json` does not hold. Absent in files of an older clary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

impl ServerInfo {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("server.json")
    }

    pub fn load(data_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(Self::path(data_dir)).ok()?).ok()
    }

    /// The key pair clients should sign with: the server's own, else the data dir's identity.
    pub fn keys_or(info: Option<&Self>, identity: &Identity) -> (String, String) {
        match info.and_then(|i| i.access_key.clone().zip(i.secret_key.clone())) {
            Some(pair) => pair,
            None => (identity.access_key.clone(), identity.secret_key.clone()),
        }
    }
}

/// The role the generated SDK config names as every job's and model's default: the one the
/// server's principal acts as (any role name resolves in the server's account, and every one
/// may do everything).
pub const DEFAULT_ROLE_NAME: &str = clary_api::query::CALLER_ROLE;

/// Writes the SageMaker Python SDK config that keeps the SDK away from real AWS
/// (docs/sdk-wire.md §2): a default bucket, so no hard-wired STS call, and no telemetry; and the
/// default execution roles (in `account`) that v2 and v3 read when a user passes no role, so
/// `role=None` works (v3's `ModelTrainer`, `Estimator(role=None)`, processing). Transform jobs
/// take their role from their model's, so the schema has no role of their own.
pub fn write_sdk_config(data_dir: &Path, bucket: &str, account: &str) -> Result<PathBuf> {
    let path = data_dir.join("sagemaker-config.yaml");
    write_private(&path, sdk_config_text(bucket, account).as_bytes())?;
    Ok(path)
}

fn sdk_config_text(bucket: &str, account: &str) -> String {
    let role = format!("arn:aws:iam::{account}:role/{DEFAULT_ROLE_NAME}");
    format!(
        "# Written by `clary env`: the SageMaker Python SDK reads it through SAGEMAKER_USER_CONFIG_OVERRIDE.\n\
         SchemaVersion: '1.0'\n\
         SageMaker:\n  \
           PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n      Session:\n        DefaultS3Bucket: {bucket}\n  \
           TrainingJob:\n    RoleArn: {role}\n  \
           ProcessingJob:\n    RoleArn: {role}\n  \
           Model:\n    ExecutionRoleArn: {role}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_config_names_the_bucket_and_the_default_roles() {
        let text = sdk_config_text("sagemaker-us-east-1-111122223333", "111122223333");
        let role = "arn:aws:iam::111122223333:role/SageMakerRole";
        for line in [
            "        DefaultS3Bucket: sagemaker-us-east-1-111122223333\n",
            "      TelemetryOptOut: true\n",
            &format!("  TrainingJob:\n    RoleArn: {role}\n"),
            &format!("  ProcessingJob:\n    RoleArn: {role}\n"),
            &format!("  Model:\n    ExecutionRoleArn: {role}\n"),
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_dir_and_its_key_files_are_private_from_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let fresh = tmp.path().join("fresh/nested");
        prepare_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let id = Identity::load_or_create(&fresh).unwrap();
        assert_eq!(mode(&fresh.join("identity.json")), 0o600);
        assert_eq!(
            Identity::load_or_create(&fresh).unwrap().secret_key,
            id.secret_key
        );
        write_private(&fresh.join("server.json"), b"{}").unwrap();
        write_private(&fresh.join("server.json"), b"{\"a\":1}").unwrap();
        assert_eq!(mode(&fresh.join("server.json")), 0o600);
        assert_eq!(
            std::fs::read(fresh.join("server.json")).unwrap(),
            b"{\"a\":1}"
        );
        let info = ServerInfo {
            url: "http://127.0.0.1:1".into(),
            region: DEFAULT_REGION.into(),
            pid: 1,
            access_key: Some("AKIAGIVEN".into()),
            secret_key: Some("given-secret".into()),
        };
        write_private(
            &ServerInfo::path(&fresh),
            &serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        let loaded = ServerInfo::load(&fresh).unwrap();
        assert_eq!(
            ServerInfo::keys_or(Some(&loaded), &id),
            ("AKIAGIVEN".to_string(), "given-secret".to_string())
        );
        let older: ServerInfo =
            serde_json::from_str(r#"{"url": "u", "region": "r", "pid": 2}"#).unwrap();
        assert_eq!(
            ServerInfo::keys_or(Some(&older), &id),
            (id.access_key.clone(), id.secret_key.clone())
        );
        let names: Vec<_> = std::fs::read_dir(&fresh)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "no temporary file is left behind: {names:?}"
        );
    }
}
