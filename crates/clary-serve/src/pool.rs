//! The worker pool: long-lived Python workers, each fed over its own Unix socket. Requests wait
//! in one bounded queue; a free worker takes what is queued (up to `max_batch`) in one frame. A
//! worker that crashes is restarted and only its in-flight requests fail; one that runs past the
//! timeout is killed and replaced.

use crate::config::ServeConfig;
use crate::frame::{self, RequestItem};
use bytes::Bytes;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

/// One `/invocations` request.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub custom_attributes: Option<String>,
}

/// The model's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub content_type: String,
    pub custom_attributes: Option<String>,
}

impl Reply {
    fn error(status: u16, message: String) -> Self {
        Reply {
            status,
            body: Bytes::from(message + "\n"),
            content_type: "text/plain".into(),
            custom_attributes: None,
        }
    }
}

struct Job {
    inv: Invocation,
    tx: oneshot::Sender<Reply>,
}

/// Whether any worker has loaded the model, and why loading failed if it did.
#[derive(Default)]
pub struct Health {
    ready: AtomicUsize,
    failure: Mutex<Option<String>>,
    /// Workers replaced after they crashed or hung (for the server's metrics).
    restarts: AtomicU64,
    /// A worker has loaded the model at least once: with none ready now, they are being
    /// replaced, and requests wait in the queue for them rather than being refused.
    loaded_once: std::sync::atomic::AtomicBool,
}

pub enum HealthState {
    Healthy(usize),
    Loading,
    Failed(String),
}

impl Health {
    pub fn state(&self) -> HealthState {
        let ready = self.ready.load(Ordering::SeqCst);
        if ready > 0 {
            return HealthState::Healthy(ready);
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(reason) => HealthState::Failed(reason),
            None => HealthState::Loading,
        }
    }

    /// Whether the model loaded once (its workers may be restarting now).
    pub fn loaded_once(&self) -> bool {
        self.loaded_once.load(Ordering::SeqCst)
    }

    /// How many workers were replaced so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Marks the model as failed to load (the first reason wins).
    pub fn fail(&self, reason: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(reason);
    }
}

pub struct QueueFull;

pub struct Pool {
    tx: Option<mpsc::Sender<Job>>,
    pub health: Arc<Health>,
    supervisors: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    /// Starts `config.workers` workers; `python` is the interpreter they run on.
    pub fn start(config: Arc<ServeConfig>, health: Arc<Health>) -> Pool {
        let (tx, rx) = mpsc::channel(config.queue_size);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let supervisors = (0..config.workers)
            .map(|slot| tokio::spawn(supervise(slot, config.clone(), rx.clone(), health.clone())))
            .collect();
        Pool {
            tx: Some(tx),
            health,
            supervisors,
        }
    }

    /// Queues a request; a full queue is refused at once rather than left to hang.
    pub fn submit(&self, inv: Invocation) -> Result<oneshot::Receiver<Reply>, QueueFull> {
        let (tx, rx) = oneshot::channel();
        match &self.tx {
            Some(q) => q.try_send(Job { inv, tx }).map_err(|_| QueueFull)?,
            None => return Err(QueueFull),
        }
        Ok(rx)
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Lets the workers finish what they hold, then stops them.
    pub async fn shutdown(mut self) {
        self.tx = None;
        for s in self.supervisors.drain(..) {
            let _ = s.await;
        }
    }
}

enum StartError {
    /// The model or the user's module could not be loaded: retrying won't help.
    Load(String),
    /// The worker could not be started at all.
    Spawn(String),
}

enum End {
    Shutdown,
    Replace(String),
}

async fn supervise(
    slot: usize,
    config: Arc<ServeConfig>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    health: Arc<Health>,
) {
    let mut generation = 0u64;
    let mut quick_failures = 0u32;
    loop {
        generation += 1;
        let started = tokio::time::Instant::now();
        let mut worker = match Worker::start(slot, generation, &config).await {
            Ok(w) => w,
            Err(StartError::Load(reason)) => {
                eprintln!("worker {slot}: the model could not be loaded: {reason}");
                health.fail(reason);
                return;
            }
            Err(StartError::Spawn(reason)) => {
                eprintln!("worker {slot}: {reason}");
                health.fail(reason);
                return;
            }
        };
        health.ready.fetch_add(1, Ordering::SeqCst);
        health.loaded_once.store(true, Ordering::SeqCst);
        let end = worker.serve(&rx, &config).await;
        health.ready.fetch_sub(1, Ordering::SeqCst);
        worker.stop().await;
        match end {
            End::Shutdown => return,
            End::Replace(why) => {
                eprintln!("worker {slot}: {why}; starting a new one");
                health.restarts.fetch_add(1, Ordering::Relaxed);
                // A worker that dies right after loading, again and again, backs off.
                if started.elapsed() < Duration::from_secs(5) {
                    quick_failures += 1;
                    tokio::time::sleep(Duration::from_millis(
                        200 * u64::from(quick_failures.min(25)),
                    ))
                    .await;
                } else {
                    quick_failures = 0;
                }
            }
        }
    }
}

struct Worker {
    child: Child,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Every handler is a default: CSV bodies are read here ([`crate::csv`]).
    fused: bool,
}

impl Worker {
    async fn start(slot: usize, generation: u64, config: &ServeConfig) -> Result<Self, StartError> {
        let sock = socket_path(&config.run_dir, slot, generation)
            .map_err(|e| StartError::Spawn(format!("preparing the worker socket: {e}")))?;
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock)
            .map_err(|e| StartError::Spawn(format!("binding {}: {e}", sock.display())))?;
        let mut cmd = Command::new(&config.python);
        cmd.arg("-m")
            .arg("clary_serving.worker")
            .arg("--socket")
            .arg(&sock)
            .arg("--model-dir")
            .arg(&config.model_dir);
        for d in &config.code_dirs {
            cmd.arg("--code-dir").arg(d);
        }
        if config.legacy_handlers {
            cmd.arg("--legacy");
        }
        let mut pythonpath = config.shims_dir.as_os_str().to_owned();
        if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            pythonpath.push(":");
            pythonpath.push(existing);
        }
        cmd.envs(config.extra_env.iter().map(|(k, v)| (k, v)))
            .env("PYTHONPATH", pythonpath)
            .env("PYTHONUNBUFFERED", "1")
            // The instance's key pair is the model server's, not the inference code's.
            .env_remove("CLARY_AGENT_ACCESS_KEY")
            .env_remove("CLARY_AGENT_SECRET_KEY");
        // The serving containers' MXNet defaults: one engine thread each, so workers scale
        // by process rather than fighting over cores.
        for (k, v) in [
            ("MXNET_CPU_WORKER_NTHREADS", "1"),
            ("MXNET_CPU_PRIORITY_NTHREADS", "1"),
            ("MXNET_KVSTORE_REDUCTION_NTHREADS", "1"),
            ("OMP_NUM_THREADS", "1"),
        ] {
            if std::env::var_os(k).is_none() && !config.extra_env.iter().any(|(e, _)| e == k) {
                cmd.env(k, v);
            }
        }
        cmd.current_dir(&config.model_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            StartError::Spawn(format!("could not start {}: {e}", config.python.display()))
        })?;
        let deadline = tokio::time::sleep(config.startup_timeout);
        tokio::pin!(deadline);
        let stream = tokio::select! {
            accepted = listener.accept() => accepted
                .map_err(|e| StartError::Spawn(format!("accepting the worker: {e}")))?
                .0,
            status = child.wait() => {
                return Err(StartError::Load(format!("the worker exited before it connected ({})", describe(status))));
            }
            _ = &mut deadline => {
                return Err(StartError::Load(format!("the worker did not connect within {:?}", config.startup_timeout)));
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        let (rd, writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(1 << 16, rd);
        let hello = tokio::select! {
            h = frame::read_hello(&mut reader) => h,
            _ = &mut deadline => {
                return Err(StartError::Load(format!("the model did not load within {:?} (SAGEMAKER_STARTUP_TIMEOUT)", config.startup_timeout)));
            }
        };
        match hello {
            Ok(h) if h.ready => {
                eprintln!(
                    "worker {slot}: model loaded ({} model{})",
                    h.kind.as_deref().unwrap_or("unknown"),
                    if h.fused {
                        ", default handlers with request batching"
                    } else {
                        ""
                    }
                );
                Ok(Worker {
                    child,
                    reader,
                    writer,
                    fused: h.fused,
                })
            }
            Ok(h) => Err(StartError::Load(
                h.error.unwrap_or_else(|| "unknown error".into()),
            )),
            Err(_) => {
                let status = child.wait().await;
                Err(StartError::Load(format!(
                    "the worker exited while loading the model ({})",
                    describe(status)
                )))
            }
        }
    }

    /// Takes batches off the queue until the queue closes or this worker must be replaced.
    async fn serve(
        &mut self,
        rx: &tokio::sync::Mutex<mpsc::Receiver<Job>>,
        config: &ServeConfig,
    ) -> End {
        loop {
            let batch = {
                let mut q = rx.lock().await;
                let first = tokio::select! {
                    job = q.recv() => job,
                    status = self.child.wait() => {
                        return End::Replace(format!("the worker exited while idle ({})", describe(status)));
                    }
                };
                let Some(first) = first else {
                    return End::Shutdown;
                };
                let mut batch = vec![first];
                while batch.len() < config.max_batch {
                    match q.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                batch
            };
            // Requests whose client has gone are not worth a forward pass.
            let batch: Vec<Job> = batch.into_iter().filter(|j| !j.tx.is_closed()).collect();
            if batch.is_empty() {
                continue;
            }
            let (items, bodies): (Vec<RequestItem>, Vec<Bytes>) = batch
                .iter()
                .map(|j| {
                    let read = (self.fused && j.inv.content_type.as_deref() == Some("text/csv"))
                        .then(|| crate::csv::numbers(&j.inv.body))
                        .flatten();
                    let (shape, body) = match read {
                        Some((shape, values)) => (Some(shape), Bytes::from(values)),
                        None => (None, j.inv.body.clone()),
                    };
                    let item = RequestItem {
                        len: body.len(),
                        ct: j.inv.content_type.clone(),
                        accept: j.inv.accept.clone(),
                        ca: j.inv.custom_attributes.clone(),
                        shape,
                    };
                    (item, body)
                })
                .unzip();
            let bodies: Vec<&Bytes> = bodies.iter().collect();
            let exchange = async {
                frame::write_batch(&mut self.writer, &items, &bodies).await?;
                frame::read_batch(&mut self.reader).await
            };
            match tokio::time::timeout(config.timeout, exchange).await {
                Ok(Ok(replies)) if replies.len() == batch.len() => {
                    for (job, (item, body)) in batch.into_iter().zip(replies) {
                        let _ = job.tx.send(Reply {
                            status: item.status,
                            body,
                            content_type: item.ct,
                            custom_attributes: item.ca,
                        });
                    }
                }
                Ok(Ok(replies)) => {
                    let why = format!(
                        "the worker answered {} requests with {} replies",
                        batch.len(),
                        replies.len()
                    );
                    fail_all(batch, 500, &why);
                    return End::Replace(why);
                }
                Ok(Err(_)) => {
                    let status =
                        tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
                    let why = match status {
                        Ok(s) => format!("the worker crashed ({})", describe(s)),
                        Err(_) => "the worker broke the connection".to_string(),
                    };
                    fail_all(batch, 500, &format!("{why} while handling this request"));
                    return End::Replace(why);
                }
                Err(_) => {
                    let why = format!(
                        "the model did not answer within {} s (SAGEMAKER_MODEL_SERVER_TIMEOUT); its worker was replaced",
                        config.timeout.as_secs()
                    );
                    fail_all(batch, 504, &why);
                    return End::Replace(why);
                }
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Unix socket paths are limited to about 100 bytes; a deep run directory falls back to a
/// private directory under the temporary directory (mode 0700, so only this user can connect).
fn socket_path(
    run_dir: &std::path::Path,
    slot: usize,
    generation: u64,
) -> std::io::Result<std::path::PathBuf> {
    let name = format!("worker-{}-{slot}-{generation}.sock", std::process::id());
    let direct = run_dir.join(&name);
    if direct.as_os_str().len() < 100 {
        return Ok(direct);
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata(run_dir)?.uid();
    let dir = std::env::temp_dir().join(format!("clary-{uid}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir.join(name))
}

fn fail_all(batch: Vec<Job>, status: u16, message: &str) {
    for job in batch {
        let _ = job.tx.send(Reply::error(status, message.to_string()));
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => e.to_string(),
    }
}
