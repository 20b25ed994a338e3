//! One host's run of a batch transform job: start the model server, take this host's share of
//! the input objects, send their records through `/invocations` with
//! `MaxConcurrentTransforms` in flight, and store each `<key>.out` once it is whole.

use super::input::*;
use super::model_server::{ModelServer, server_dir};
use super::output::*;
use super::records::{Position, Split, Strategy};
use super::shaping::{Shaping, ShapingSpec};
use crate::blocking;
use crate::job_log::JobLog;
use crate::objects::{self, Objects};
use crate::reporter::Reporter;
use clary_exec::protocol::{
    INSTANCE_TOKEN_HEADER, JobKind, Outcome, ResultReport, TransformHostSpec,
};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the model may take to load.
pub(super) const STARTUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Progress goes to the job's status at most this often (each report is a transition kept
/// with the job); the log has a line per stored object.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Characters of a model's error answer kept in a failure reason.
pub(super) const ANSWER_CHARS: usize = 300;

/// Runs the host; returns the agent's exit code (0 when the result reached the server).
pub async fn run_transform_host(spec: TransformHostSpec) -> i32 {
    let reporter = Reporter::new(
        &spec.control_url,
        &spec.access_key,
        &spec.secret_key,
        &spec.region,
        &spec.job_name,
    )
    .for_kind(JobKind::TransformJob);
    let (tx, shipper) = reporter.start_log_shipper(&spec.log_stream);
    let log = JobLog::new(tx);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let log = log.downgrade();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                log.info("Stop requested: no more records are sent; outputs not yet complete are not stored");
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let (outcome, reason) = match run(&spec, &reporter, &log, &stop).await {
        Ok(()) => (Outcome::Completed, None),
        Err(_) if stop.load(Ordering::SeqCst) => (Outcome::Stopped, None),
        Err(reason) => {
            log.info(&format!("Failed: {reason}"));
            (Outcome::Failed, Some(reason))
        }
    };
    drop(log);
    let _ = shipper.await;
    let result = ResultReport {
        kind: JobKind::TransformJob,
        job_name: spec.job_name.clone(),
        host: spec.current_host.clone(),
        outcome,
        failure_reason: reason,
        exit_code: None,
        model_artifacts: None,
        transient: false,
        attempt: 0,
    };
    match reporter.result(&result).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "clary agent: could not report the result of {}: {e}",
                spec.job_name
            );
            1
        }
    }
}

/// A batch's answer, or why there is none.
type Answer = Result<Vec<u8>, String>;

/// Sends one batch, retrying per `ModelClientConfig`.
async fn invoke(
    http: reqwest::Client,
    server: Arc<(String, String)>,
    call: Arc<CallSettings>,
    payload: Vec<u8>,
) -> Answer {
    let payload = bytes::Bytes::from(payload);
    let mut last = String::new();
    let mut tries = 0;
    for attempt in 0..=call.retries {
        tries += 1;
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
        }
        let mut req = http
            .post(format!("{}/invocations", server.0))
            .header(INSTANCE_TOKEN_HEADER, &server.1)
            .timeout(call.timeout)
            .body(payload.clone());
        if let Some(ct) = &call.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(a) = &call.accept {
            req = req.header("accept", a);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => return Ok(b.to_vec()),
                Err(e) => last = format!("reading the model's answer failed: {e}"),
            },
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let body: String = body.trim().chars().take(ANSWER_CHARS).collect();
                last = format!("the model answered {status}: {body}");
                // The model refused the request itself (a bad record, too large): the same
                // request would be refused again.
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    break;
                }
            }
            Err(e) if e.is_timeout() => {
                last = format!(
                    "the model did not answer within InvocationsTimeoutInSeconds ({} s)",
                    call.timeout.as_secs()
                )
            }
            Err(e) => last = format!("the request to the model server failed: {e}"),
        }
    }
    Err(format!(
        "{last} (after {tries} attempt{})",
        if tries == 1 { "" } else { "s" }
    ))
}

struct CallSettings {
    timeout: Duration,
    retries: u32,
    content_type: Option<String>,
    accept: Option<String>,
}

fn positions_text(positions: &[Position]) -> String {
    match (positions.first(), positions.last()) {
        (Some(a), Some(b)) if positions.len() > 1 => match (a, b) {
            (Position::Line(x), Position::Line(y)) => format!("lines {x}-{y}"),
            (a, _) => format!("records from {a}"),
        },
        (Some(a), _) => a.to_string(),
        _ => "an empty batch".into(),
    }
}

async fn run(
    spec: &TransformHostSpec,
    reporter: &Reporter,
    log: &JobLog,
    stop: &Arc<AtomicBool>,
) -> Result<(), String> {
    let host = &spec.current_host;
    let store = {
        let signer = clary_sigv4::Signer {
            access_key: spec.access_key.clone(),
            secret_key: spec.secret_key.clone(),
            region: spec.region.clone(),
        };
        let s = objects::for_access(
            &spec.object_access,
            &spec.store_root,
            &spec.control_url,
            signer,
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| format!("InternalServerError: {e}"))?;
        log.info(&s.how);
        s.objects
    };
    let shaping = Arc::new(
        Shaping::new(&ShapingSpec {
            input_filter: spec.input_filter.as_deref(),
            output_filter: spec.output_filter.as_deref(),
            join_input: spec.join_input,
            content_type: spec.input.content_type.as_deref(),
            accept: spec.output.accept.as_deref(),
            assemble_lines: spec.output.assemble_with == "Line",
        })
        .map_err(|e| format!("ClientError: {e}"))?,
    );
    let split = Split::parse(&spec.input.split).ok_or_else(|| {
        format!(
            "ClientError: SplitType {} is not supported; use None, Line or RecordIO",
            spec.input.split
        )
    })?;
    let objects = {
        let (store, spec) = (store.clone(), spec.clone());
        blocking(move || share(&store, &spec)).await?
    };
    log.info(&format!(
        "{host}: {} input objects in this host's share (host {} of {})",
        objects.len(),
        spec.hosts.iter().position(|h| h == host).unwrap_or(0) + 1,
        spec.hosts.len()
    ));
    let _ = reporter
        .status(host, "Starting", "Starting the model server")
        .await;
    let mut model = spec.model.clone();
    model.work_dir = server_dir(&spec.work_dir);
    let mut server =
        ModelServer::start(model, log).map_err(|e| format!("InternalServerError: {e}"))?;
    let http = clary_client::http_client_builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("InternalServerError: {e}"))?;
    let ready = tokio::select! {
        r = server.wait_ready(&http, STARTUP_TIMEOUT) => r,
        () = until(stop) => Err("stopped".into()),
    };
    if let Err(e) = ready {
        server
            .stop(Duration::from_secs(spec.stop_grace_secs.min(10)))
            .await;
        return Err(format!("ClientError: {e}"));
    }
    let params = server.execution_parameters(&http).await;
    let strategy = spec
        .batch_strategy
        .as_deref()
        .or(params.batch_strategy.as_deref())
        .and_then(Strategy::parse)
        .unwrap_or(Strategy::MultiRecord);
    let max_payload_mb = spec
        .max_payload_mb
        .or(params.max_payload_in_mb)
        .unwrap_or(6);
    let concurrency = spec
        .max_concurrent_transforms
        .filter(|n| *n > 0)
        .or(params.max_concurrent_transforms)
        .unwrap_or(1)
        .max(1) as usize;
    log.info(&format!(
        "Model ready; sending {split:?}-split records, BatchStrategy {strategy:?}, MaxPayloadInMB {max_payload_mb}, MaxConcurrentTransforms {concurrency}"
    ));
    let server_addr = Arc::new((server.base_url.clone(), server.token.clone()));
    let result = transform_objects(
        spec,
        reporter,
        log,
        stop,
        &store,
        objects,
        Batching {
            split,
            strategy,
            max_payload_mb,
            gzip: spec.input.gzip,
        },
        shaping,
        concurrency,
        http,
        server_addr,
    )
    .await;
    server
        .stop(Duration::from_secs(spec.stop_grace_secs.min(30)))
        .await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn transform_objects(
    spec: &TransformHostSpec,
    reporter: &Reporter,
    log: &JobLog,
    stop: &Arc<AtomicBool>,
    store: &Objects,
    objects: Vec<InputObject>,
    batching: Batching,
    shaping: Arc<Shaping>,
    concurrency: usize,
    http: reqwest::Client,
    server: Arc<(String, String)>,
) -> Result<(), String> {
    let host = spec.current_host.clone();
    let scratch = spec.work_dir.join("output");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("InternalServerError: creating {}: {e}", scratch.display()))?;
    let call = Arc::new(CallSettings {
        timeout: Duration::from_secs(spec.invocations_timeout_secs.max(1)),
        retries: spec.invocations_max_retries,
        content_type: spec.input.content_type.clone(),
        accept: spec.output.accept.clone(),
    });
    let (tx, mut rx) = mpsc::channel::<Item>(concurrency * 2 + 2);
    let reader = {
        let (store, objects, shaping, stop) = (
            store.clone(),
            objects.clone(),
            shaping.clone(),
            stop.clone(),
        );
        tokio::task::spawn_blocking(move || {
            read_objects(store, objects, batching, shaping, stop, tx)
        })
    };
    type InFlight = (
        usize,
        Vec<Position>,
        Vec<Vec<u8>>,
        Option<Vec<u8>>,
        tokio::task::JoinHandle<Answer>,
    );
    let mut queue: VecDeque<Result<InFlight, usize>> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut reading = true;
    let mut pending: Option<Pending> = None;
    let (mut objects_done, mut records_done) = (0usize, 0u64);
    let total = objects.len();
    let mut last_progress = Instant::now();
    let started = Instant::now();
    let capture = spec.capture.clone();
    let outcome: Result<(), String> = loop {
        if stop.load(Ordering::SeqCst) {
            break Err("stopped".into());
        }
        while reading && in_flight < concurrency {
            match rx.recv().await {
                Some(Item::Batch {
                    object,
                    batch,
                    inputs,
                }) => {
                    let sent = capture.as_ref().map(|_| batch.payload.clone());
                    let task = tokio::spawn(invoke(
                        http.clone(),
                        server.clone(),
                        call.clone(),
                        batch.payload,
                    ));
                    queue.push_back(Ok((object, batch.positions, inputs, sent, task)));
                    in_flight += 1;
                }
                Some(Item::End { object }) => queue.push_back(Err(object)),
                None => reading = false,
            }
        }
        let Some(next) = queue.pop_front() else {
            break Ok(());
        };
        match next {
            Ok((object, positions, inputs, sent, task)) => {
                in_flight -= 1;
                let obj = &objects[object];
                let answer = tokio::select! {
                    joined = task => match joined {
                        Ok(a) => a,
                        Err(e) => Err(format!("the request task failed: {e}")),
                    },
                    () = until(stop) => break Err("stopped".into()),
                };
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        break Err(format!(
                            "ClientError: {}, {}: {e}",
                            obj.uri(),
                            positions_text(&positions)
                        ));
                    }
                };
                if pending.is_none() {
                    match open_pending(&scratch, object, capture.is_some()) {
                        Ok(p) => pending = Some(p),
                        Err(e) => break Err(e),
                    }
                }
                let Some(p) = pending.as_mut() else {
                    unreachable!("opened above")
                };
                let shaped = match shaping.output(&answer, &positions, &inputs) {
                    Ok(o) => o,
                    Err((at, e)) => {
                        break Err(format!(
                            "ClientError: {}, {}: {e}",
                            obj.uri(),
                            at.map_or_else(|| positions_text(&positions), |a| a.to_string())
                        ));
                    }
                };
                if let Err(e) = p.file.write_all(&shaped) {
                    break Err(format!(
                        "InternalServerError: writing {}: {e}",
                        p.path.display()
                    ));
                }
                if let (Some((_, cap)), Some(sent)) = (p.capture.as_mut(), sent) {
                    let line = capture_line(
                        &sent,
                        &answer,
                        call.content_type.as_deref(),
                        call.accept.as_deref(),
                        capture.as_ref().is_some_and(|c| c.generate_inference_id),
                    );
                    if let Err(e) = cap.write_all(&line) {
                        break Err(format!(
                            "InternalServerError: writing the data capture: {e}"
                        ));
                    }
                }
                p.records += positions.len() as u64;
                records_done += positions.len() as u64;
            }
            Err(object) => {
                let obj = objects[object].clone();
                let p = match pending.take() {
                    Some(p) => p,
                    // An object without records still gets its (empty) output.
                    None => match open_pending(&scratch, object, capture.is_some()) {
                        Ok(p) => p,
                        Err(e) => break Err(e),
                    },
                };
                let records = p.records;
                if let Err(e) = store_output(store, spec, &obj, p).await {
                    break Err(e);
                }
                objects_done += 1;
                log.info(&format!(
                    "{}: {records} records -> s3://{}/{} ({objects_done} of {total} objects done)",
                    obj.uri(),
                    spec.output.bucket,
                    output_key(&spec.output.prefix, &obj.rel)
                ));
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let _ = reporter
                .status(
                    &host,
                    "Training",
                    &progress(objects_done, total, records_done, started),
                )
                .await;
        }
    };
    // Whatever is still in flight is dropped; its scratch output is never stored.
    drop(rx);
    for (.., task) in queue.into_iter().flatten() {
        task.abort();
    }
    if let Some(p) = pending.take() {
        let _ = std::fs::remove_file(&p.path);
    }
    let read = reader
        .await
        .unwrap_or_else(|e| Err(format!("InternalServerError: the reader failed: {e}")));
    let _ = std::fs::remove_dir_all(&scratch);
    match (outcome, read) {
        (Err(e), _) if e != "stopped" => Err(e),
        // The reader's error (a bad record) is the cause when the sender only saw it end.
        (_, Err(e)) if e != "stopped" => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), _) if stop.load(Ordering::SeqCst) => Err("stopped".into()),
        (Ok(()), Ok(())) => {
            let msg = progress(objects_done, total, records_done, started);
            log.info(&format!("Done: {msg}"));
            let _ = reporter.status(&host, "Training", &msg).await;
            Ok(())
        }
        (Ok(()), Err(e)) => Err(e),
    }
}

/// Resolves once a stop was asked for.
async fn until(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress(objects: usize, total: usize, records: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    format!(
        "Transformed {objects} of {total} objects, {records} records ({:.0} records/s)",
        records as f64 / secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keys_sit_under_the_output_path() {
        assert_eq!(output_key("out", "a/b.csv"), "out/a/b.csv.out");
        assert_eq!(output_key("out/", "b.csv"), "out/b.csv.out");
        assert_eq!(output_key("", "b.csv"), "b.csv.out");
    }

    #[test]
    fn batch_positions_read_as_line_ranges() {
        assert_eq!(
            positions_text(&[Position::Line(3), Position::Line(9)]),
            "lines 3-9"
        );
        assert_eq!(positions_text(&[Position::Offset(16)]), "byte offset 16");
    }

    #[test]
    fn capture_lines_carry_both_sides() {
        let line = capture_line(b"1,2", b"0.5", Some("text/csv"), None, true);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["captureData"]["endpointInput"]["data"], "MSwy");
        assert_eq!(v["captureData"]["endpointOutput"]["data"], "MC41");
        assert!(v["eventMetadata"]["inferenceId"].is_string());
    }
}
