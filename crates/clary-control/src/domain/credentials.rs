//! Credentials scoped to one unit of work: a training job's agents and script, or one endpoint
//! instance's model server, sign with a key pair of their own instead of the server's. A
//! scoped key is valid only while its holder lives (see `ControlPlane::principal`); it may
//! call the agents' API for its own holder, read objects (as a SageMaker execution role with
//! S3 read access does) and write only under the prefixes it was granted.

use super::job::Kind;
use serde::{Deserialize, Serialize};

/// Whose key it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holder {
    /// The hosts of one job of any kind.
    Job {
        kind: Kind,
        name: String,
    },
    EndpointInstance {
        endpoint: String,
        instance: String,
    },
}

/// Where a scoped key may write: every key under `prefix` in `bucket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteGrant {
    pub bucket: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScopedKey {
    pub access_key: String,
    pub secret_key: String,
    pub holder: Holder,
    pub writes: Vec<WriteGrant>,
    pub issued_at: f64,
}

/// The server's own signing identity, or a scoped one.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Admin,
    Scoped(ScopedKey),
}

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `n` characters of `alphabet` from `random` (one byte each; the alphabets divide 256).
fn chars(random: &[u8], alphabet: &[u8], n: usize) -> String {
    random
        .iter()
        .take(n)
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}

impl ScopedKey {
    /// A fresh key pair shaped like AWS's temporary credentials (`ASIA` + 16, 40-character
    /// secret) from 56 random bytes.
    pub fn new(holder: Holder, writes: Vec<WriteGrant>, random: &[u8; 56], now: f64) -> Self {
        ScopedKey {
            access_key: format!("ASIA{}", chars(&random[..16], KEY_ALPHABET, 16)),
            secret_key: chars(&random[16..], SECRET_ALPHABET, 40),
            holder,
            writes,
            issued_at: now,
        }
    }

    /// Whether this key may create, change or delete the object `bucket/key`.
    pub fn may_write(&self, bucket: &str, key: &str) -> bool {
        self.writes
            .iter()
            .any(|g| g.bucket == bucket && key.starts_with(&g.prefix))
    }

    /// Whether this key may make an agents' call about `job` (its kind and name) or
    /// `instance`, as the call names them.
    pub fn may_report(&self, job: Option<(Kind, &str)>, instance: Option<&str>) -> bool {
        match &self.holder {
            Holder::Job { kind, name } => job == Some((*kind, name.as_str())),
            Holder::EndpointInstance { instance: id, .. } => instance == Some(id.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(writes: Vec<WriteGrant>) -> ScopedKey {
        ScopedKey::new(
            Holder::Job {
                kind: Kind::TrainingJob,
                name: "job-1".into(),
            },
            writes,
            &[7u8; 56],
            1.0,
        )
    }

    #[test]
    fn keys_look_like_aws_temporary_credentials() {
        let mut random = [0u8; 56];
        for (i, b) in random.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        let k = ScopedKey::new(
            Holder::Job {
                kind: Kind::TrainingJob,
                name: "j".into(),
            },
            Vec::new(),
            &random,
            1.0,
        );
        assert!(k.access_key.starts_with("ASIA") && k.access_key.len() == 20);
        assert_eq!(k.secret_key.len(), 40);
        assert!(k.access_key[4..].bytes().all(|b| KEY_ALPHABET.contains(&b)));
    }

    #[test]
    fn writes_are_confined_to_the_granted_prefixes() {
        let k = key(vec![WriteGrant {
            bucket: "b".into(),
            prefix: "out/job-1/".into(),
        }]);
        assert!(k.may_write("b", "out/job-1/output/model.tar.gz"));
        assert!(!k.may_write("b", "out/job-2/output/model.tar.gz"));
        assert!(!k.may_write("b", "out/job-1"));
        assert!(!k.may_write("other", "out/job-1/x"));
    }

    #[test]
    fn reports_only_about_its_own_holder() {
        let k = key(Vec::new());
        assert!(k.may_report(Some((Kind::TrainingJob, "job-1")), None));
        assert!(!k.may_report(Some((Kind::TrainingJob, "job-2")), None));
        assert!(!k.may_report(None, Some("i-1")));
        let i = ScopedKey::new(
            Holder::EndpointInstance {
                endpoint: "e".into(),
                instance: "i-1".into(),
            },
            Vec::new(),
            &[1u8; 56],
            1.0,
        );
        assert!(i.may_report(None, Some("i-1")));
        assert!(!i.may_report(Some((Kind::TrainingJob, "job-1")), None));
    }
}
