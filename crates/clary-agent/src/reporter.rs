//! Sends the agent's reports to the control plane: status changes, batched log lines, and the
//! final result. Every call is SigV4-signed. Calls are retried with backoff so a restarting
//! server loses nothing: the agent keeps its lines until the server answers again.

use clary_client::{Retry, SignedClient};
use clary_exec::protocol::{
    AGENT_API, AgentSpec, JobKind, LogBatch, LogLine, MonitorSettings, ResultReport, StatusReport,
    SystemMetricsReport, SystemSample,
};
use clary_sigv4::Signer;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;

/// A call is retried with backoff before giving up on the server; a refusal (4xx) is final.
const RETRY: Retry = Retry::CONTROL_PLANE;
/// Log lines are sent when this many are waiting, or after [`FLUSH_EVERY`].
const BATCH_LINES: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// The system monitor's reports are retried briefly: the next one carries fresh samples.
const MONITOR_RETRY: Retry = Retry {
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
    give_up_after: Duration::from_secs(5),
};

#[derive(Clone)]
pub struct Reporter {
    client: SignedClient,
    kind: JobKind,
    job_name: String,
}

impl Reporter {
    pub fn new(
        url: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        job_name: &str,
    ) -> Self {
        let signer = Signer {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: region.into(),
        };
        Reporter {
            client: SignedClient::new(url, signer),
            kind: JobKind::default(),
            job_name: job_name.into(),
        }
    }

    /// Reports about a job of `kind` (a training job's otherwise).
    pub fn for_kind(mut self, kind: JobKind) -> Self {
        self.kind = kind;
        self
    }

    async fn call<T: Serialize>(&self, op: &str, body: &T) -> Result<(), String> {
        self.call_for(op, body).await.map(|_| ())
    }

    /// A call whose answer matters; returns the answer.
    async fn call_for<T: Serialize>(
        &self,
        op: &str,
        body: &T,
    ) -> Result<serde_json::Value, String> {
        self.client
            .call_json_retrying(AGENT_API, op, body, &RETRY)
            .await
            .map_err(|e| format!("{op}: {e}"))
    }

    pub async fn status(&self, host: &str, status: &str, message: &str) -> Result<(), String> {
        let r = StatusReport {
            kind: self.kind,
            job_name: self.job_name.clone(),
            host: host.into(),
            status: status.into(),
            message: message.into(),
        };
        self.call("ReportStatus", &r).await
    }

    /// The spec of `host` in this job's current attempt (agents started by Slurm have only
    /// the server's URL), of whichever kind the job is.
    pub async fn host_spec(&self, host: &str) -> Result<AgentSpec, String> {
        let body =
            serde_json::json!({"Kind": self.kind.as_str(), "JobName": self.job_name, "Host": host});
        let answer = self.call_for("GetHostSpec", &body).await?;
        AgentSpec::from_json(answer)
    }

    /// A batch of the system monitor's samples; answers with the monitor's settings now.
    pub async fn system_metrics(
        &self,
        host: &str,
        samples: Vec<SystemSample>,
    ) -> Result<MonitorSettings, String> {
        let r = SystemMetricsReport {
            job_name: self.job_name.clone(),
            host: host.into(),
            samples,
        };
        let answer = self
            .client
            .call_json_retrying(AGENT_API, "ReportSystemMetrics", &r, &MONITOR_RETRY)
            .await
            .map_err(|e| format!("ReportSystemMetrics: {e}"))?;
        serde_json::from_value(answer)
            .map_err(|e| format!("the monitor settings are not valid: {e}"))
    }

    pub async fn result(&self, r: &ResultReport) -> Result<(), String> {
        let r = ResultReport {
            kind: self.kind,
            ..r.clone()
        };
        self.call("ReportResult", &r).await
    }

    /// Starts the task that batches log lines; send lines into the returned channel and drop
    /// every sender, then await the handle to flush the rest.
    pub fn start_log_shipper(
        &self,
        log_stream: &str,
    ) -> (mpsc::UnboundedSender<LogLine>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        let me = self.clone();
        let stream = log_stream.to_string();
        let handle = tokio::spawn(async move {
            let mut pending: Vec<LogLine> = Vec::new();
            let mut open = true;
            while open || !pending.is_empty() {
                if open {
                    let deadline = tokio::time::sleep(FLUSH_EVERY);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            line = rx.recv() => match line {
                                Some(l) => {
                                    pending.push(l);
                                    if pending.len() >= BATCH_LINES { break; }
                                }
                                None => { open = false; break; }
                            },
                            _ = &mut deadline => break,
                        }
                    }
                }
                if pending.is_empty() {
                    continue;
                }
                let batch = LogBatch {
                    kind: me.kind,
                    job_name: me.job_name.clone(),
                    log_stream: stream.clone(),
                    events: std::mem::take(&mut pending),
                };
                if let Err(e) = me.call("PutLogLines", &batch).await {
                    eprintln!(
                        "clary agent: dropping {} log lines: {e}",
                        batch.events.len()
                    );
                }
            }
        });
        (tx, handle)
    }
}
