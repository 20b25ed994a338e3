//! The model server a transform host runs its share through: `clary model-server --spec` as a
//! child on a free loopback port with a token of its own, its output in the job's log.

use crate::job_log::JobLog;
use clary_exec::protocol::{INSTANCE_TOKEN_HEADER, MODEL_SERVER_PARENT_ENV, ModelServerSpec};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running model server.
pub struct ModelServer {
    child: Child,
    pub base_url: String,
    pub token: String,
}

/// What `GET /execution-parameters` recommends.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionParameters {
    pub max_concurrent_transforms: Option<u32>,
    pub batch_strategy: Option<String>,
    #[serde(rename = "MaxPayloadInMB")]
    pub max_payload_in_mb: Option<u64>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

impl ModelServer {
    /// Writes the spec next to the model server's directory and starts it; `credentials`
    /// (the host's key pair) go into its environment for an external store's presigned URLs.
    pub fn start(
        mut spec: ModelServerSpec,
        credentials: Option<(&str, &str)>,
        log: &JobLog,
    ) -> Result<Self, String> {
        spec.port = free_port().map_err(|e| format!("finding a free loopback port: {e}"))?;
        spec.token = random_token();
        std::fs::create_dir_all(&spec.work_dir)
            .map_err(|e| format!("creating {}: {e}", spec.work_dir.display()))?;
        let spec_path = spec.work_dir.join("model-server.json");
        let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        std::fs::write(&spec_path, bytes)
            .map_err(|e| format!("writing {}: {e}", spec_path.display()))?;
        let exe = std::env::current_exe()
            .map_err(|e| format!("finding the clary binary to start the model server: {e}"))?;
        let mut command = Command::new(exe);
        if let Some((access, secret)) = credentials {
            command
                .env("CLARY_AGENT_ACCESS_KEY", access)
                .env("CLARY_AGENT_SECRET_KEY", secret);
        }
        let mut child = command
            .arg("model-server")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so stopping it reaches its Python workers too; it ends itself
            // if this agent dies without stopping it.
            .process_group(0)
            .env(MODEL_SERVER_PARENT_ENV, std::process::id().to_string())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the model server: {e}"))?;
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.downgrade();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.line(&line);
                }
            });
        }
        Ok(ModelServer {
            child,
            base_url: format!("http://127.0.0.1:{}", spec.port),
            token: spec.token,
        })
    }

    /// Waits until `/ping` answers 200. `Err` says why the model never became ready.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the model server exited ({status}) before the model was ready; its output is in this job's log"
                ));
            }
            let answer = http
                .get(format!("{}/ping", self.base_url))
                .header(INSTANCE_TOKEN_HEADER, &self.token)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = answer {
                match r.status().as_u16() {
                    200 => return Ok(()),
                    500 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let reason = body["reason"].as_str().unwrap_or("unknown").to_string();
                        return Err(format!("the model could not be loaded: {reason}"));
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the model was not ready within {} s; its output is in this job's log",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn execution_parameters(&self, http: &reqwest::Client) -> ExecutionParameters {
        let answer = http
            .get(format!("{}/execution-parameters", self.base_url))
            .header(INSTANCE_TOKEN_HEADER, &self.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            _ => ExecutionParameters::default(),
        }
    }

    /// Stops the server (SIGTERM to its group, SIGKILL after `grace`).
    pub async fn stop(mut self, grace: Duration) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let Some(pid) = self.child.id() else { return };
        let pgid = Pid::from_raw(pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
    }
}

/// The model server's directory inside a host's.
pub fn server_dir(work_dir: &Path) -> std::path::PathBuf {
    work_dir.join("model-server")
}
