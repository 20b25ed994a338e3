//! One endpoint instance: its spec, its launch through the executor, the address a cluster
//! instance reports, its health check and its log.

use super::Hosting;
use crate::domain::credentials::Holder;
use crate::domain::endpoint::{Instance, Launched, endpoint_log_group};
use crate::domain::hosting::VariantPlan;
use crate::error::ControlError;
use crate::now_millis;
use clary_exec::ExecHandle;
use clary_exec::executor::{InstanceLaunch, UnitCredentials};
use clary_exec::protocol::{INSTANCE_TOKEN_HEADER, ModelServerSpec};
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

impl Hosting {
    /// The spec of an endpoint instance, for a model server started on a cluster node
    /// (`ClaryAgent.GetModelServerSpec`).
    pub fn model_server_spec(
        &self,
        endpoint: &str,
        instance: &str,
    ) -> Result<ModelServerSpec, ControlError> {
        let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        if !plain(endpoint) || !plain(instance) {
            return Err(ControlError::Validation(format!(
                "{endpoint:?}/{instance:?} is not an endpoint instance"
            )));
        }
        let path = self
            .config
            .data_dir
            .join("endpoints")
            .join(endpoint)
            .join(instance)
            .join("spec.json");
        let text = std::fs::read(&path).map_err(|_| {
            ControlError::ResourceNotFound(format!(
                "endpoint {endpoint} has no instance {instance}"
            ))
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            ControlError::Internal(format!(
                "the spec of instance {instance} is unreadable: {e}"
            ))
        })
    }

    /// A model server on a cluster node says where it listens (`ClaryAgent.ReportInstance`).
    pub fn report_instance(&self, instance: &str, address: &str, port: u16) {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.to_string(), (address.to_string(), port));
        self.wake.notify_one();
    }

    /// Writes the instance's spec and starts its model server. Returns where it runs and the
    /// port it listens on (0 on a cluster node, which picks one and reports it).
    pub(super) fn launch_instance(
        &self,
        endpoint: &str,
        v: &VariantPlan,
        i: &Instance,
    ) -> Result<Launched, String> {
        std::fs::create_dir_all(&i.work_dir)
            .map_err(|e| format!("creating the instance's directory: {e}"))?;
        let spec_path = i.work_dir.join("spec.json");
        // The spec is written before the launch, so it records the intent: a server killed
        // after starting the model server and before saving its handle finds it here again
        // and adopts it rather than starting a second, untracked one.
        if let Ok(text) = std::fs::read(&spec_path)
            && let Ok(earlier) = serde_json::from_slice::<ModelServerSpec>(&text)
            && let Some(handle) = self.executor.adopt_instance(&InstanceLaunch {
                endpoint,
                instance_id: &i.id,
                instance_type: &v.instance_type,
                spec_path: &spec_path,
                log_path: &i.log_file(),
                // Adoption finds units; it starts none, so hands out no key.
                credentials: UnitCredentials {
                    access_key: "",
                    secret_key: "",
                },
            })
        {
            tracing::info!(
                "endpoint {endpoint}: adopted instance {} started before a restart",
                i.id
            );
            let port = if matches!(handle, ExecHandle::Process(_)) {
                earlier.port
            } else {
                0
            };
            return Ok(Launched {
                handle,
                port,
                token: earlier.token,
            });
        }
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let spec = ModelServerSpec {
            endpoint_name: endpoint.to_string(),
            variant_name: v.name.clone(),
            instance_id: i.id.clone(),
            image: v.image.clone(),
            model_data_url: v.model_data_url.clone(),
            environment: v.environment.clone(),
            port,
            work_dir: i.work_dir.clone(),
            store_root: self.config.data_dir.join("objects"),
            object_access: self.config.agent_objects.clone(),
            control_url: self.config.control_url.clone(),
            region: self.config.region.clone(),
            runtimes_dir: self.config.runtimes_dir.clone(),
            python_shims: self.config.python_shims.clone(),
            accelerator_type: v.accelerator_type.clone(),
            token: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        };
        std::fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("writing the instance's spec: {e}"))?;
        self.logs
            .create_stream(&endpoint_log_group(endpoint), &i.log_stream)
            .map_err(|e| e.to_string())?;
        // Its own key pair: it reports as this instance and reads objects (over the S3 API, or
        // with presigned URLs from an external store; one reading this machine's store
        // directly does not use it).
        let key = self
            .credentials
            .issue(
                Holder::EndpointInstance {
                    endpoint: endpoint.to_string(),
                    instance: i.id.clone(),
                },
                Vec::new(),
            )
            .map_err(|e| format!("issuing the instance's credentials: {e}"))?;
        let handle = self.executor.launch_instance(&InstanceLaunch {
            endpoint,
            instance_id: &i.id,
            instance_type: &v.instance_type,
            spec_path: &spec_path,
            log_path: &i.log_file(),
            credentials: UnitCredentials {
                access_key: &key.access_key,
                secret_key: &key.secret_key,
            },
        })?;
        crate::failpoint::hit(crate::failpoint::AFTER_INSTANCE_LAUNCH);
        // A cluster instance picks a port on its node and reports it with its address.
        let port = if matches!(handle, ExecHandle::Process(_)) {
            port
        } else {
            0
        };
        Ok(Launched {
            handle,
            port,
            token: spec.token,
        })
    }

    /// Copies new complete lines of an instance's output into its log stream.
    pub(super) fn ship_log(&self, group: &str, i: &mut Instance) {
        let Ok(mut f) = std::fs::File::open(i.log_file()) else {
            return;
        };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return;
        };
        if len <= i.log_offset || f.seek(SeekFrom::Start(i.log_offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.take((len - i.log_offset).min(1 << 20))
            .read_to_end(&mut buf)
            .is_err()
        {
            return;
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let now = now_millis();
        let events: Vec<(i64, String)> = buf[..end]
            .split(|&b| b == b'\n')
            .map(|l| {
                (
                    now,
                    String::from_utf8_lossy(l)
                        .trim_end_matches('\r')
                        .to_string(),
                )
            })
            .collect();
        if self.logs.append(group, &i.log_stream, &events).is_ok() {
            i.log_offset += end as u64 + 1;
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET /ping` on a model server: its status and body, or None if it does not answer.
pub(super) async fn ping(address: &str, port: u16, token: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((address, port)).await.ok()?;
        let request = format!(
            "GET /ping HTTP/1.0\r\nHost: {address}\r\n{INSTANCE_TOKEN_HEADER}: {token}\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// The last `lines` lines of a file.
pub(super) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a healthy model server says of itself in its health answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceStats {
    /// Requests waiting for one of its workers.
    pub queued: u64,
    /// Workers it replaced after a crash or a hang.
    pub worker_restarts: u64,
}

/// Asks the model server at `authority` (`host:port`) for its [`InstanceStats`].
pub async fn probe(authority: &str, token: &str) -> Option<InstanceStats> {
    let (host, port) = authority.rsplit_once(':')?;
    let (status, body) = ping(host, port.parse().ok()?, token).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    Some(InstanceStats {
        queued: v["queued"].as_u64().unwrap_or(0),
        worker_restarts: v["worker_restarts"].as_u64().unwrap_or(0),
    })
}
