//! Where Clary keeps its state, its key pair, and how clients find a running server.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
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
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
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
        let tmp = data_dir.join(".identity.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&id)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok(id)
    }

    /// The bucket the generated SDK config names as `DefaultS3Bucket` (SageMaker's own naming).
    pub fn default_bucket(&self, region: &str) -> String {
        format!("sagemaker-{region}-{}", self.account)
    }
}

/// What a running server publishes for `clary env` and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub region: String,
    pub pid: u32,
}

impl ServerInfo {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("server.json")
    }

    pub fn load(data_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(Self::path(data_dir)).ok()?).ok()
    }
}

/// Writes the SageMaker Python SDK config that keeps the SDK away from real AWS
/// (docs/sdk-wire.md §2): a default bucket, so no hard-wired STS call, and no telemetry.
pub fn write_sdk_config(data_dir: &Path, bucket: &str) -> Result<PathBuf> {
    let path = data_dir.join("sagemaker-config.yaml");
    let text = format!(
        "# Written by `clary env`: the SageMaker Python SDK reads it through SAGEMAKER_USER_CONFIG_OVERRIDE.\n\
         SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n      Session:\n        DefaultS3Bucket: {bucket}\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
