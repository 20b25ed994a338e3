//! A transform host's outputs: each object's `.out` (and its data capture) written to a
//! scratch file and stored in one put once whole.

use crate::blocking;
use crate::objects::Objects;
use clary_exec::protocol::TransformHostSpec;
use std::io::Write;
use std::path::PathBuf;

use super::input::InputObject;

/// An object's output, written to a scratch file until it is whole.
pub(super) struct Pending {
    pub(super) path: PathBuf,
    pub(super) file: std::io::BufWriter<std::fs::File>,
    pub(super) capture: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    pub(super) records: u64,
}

pub(super) fn open_pending(
    scratch: &std::path::Path,
    object: usize,
    capture: bool,
) -> Result<Pending, String> {
    let open = |path: PathBuf| {
        std::fs::File::create(&path)
            .map(|f| (path.clone(), std::io::BufWriter::with_capacity(1 << 20, f)))
            .map_err(|e| format!("InternalServerError: creating {}: {e}", path.display()))
    };
    let (path, file) = open(scratch.join(format!("{object}.out.part")))?;
    let capture = if capture {
        Some(open(scratch.join(format!("{object}.capture.part")))?)
    } else {
        None
    };
    Ok(Pending {
        path,
        file,
        capture,
        records: 0,
    })
}

/// `<output prefix>/<rel>.out`.
pub(super) fn output_key(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rel}.out")
    } else {
        format!("{prefix}/{rel}.out")
    }
}

/// Stores an object's finished output (and its data capture) in one put each: the `.out`
/// object appears whole or not at all.
pub(super) async fn store_output(
    store: &Objects,
    spec: &TransformHostSpec,
    obj: &InputObject,
    p: Pending,
) -> Result<(), String> {
    let Pending {
        path,
        mut file,
        capture,
        ..
    } = p;
    file.flush()
        .map_err(|e| format!("InternalServerError: writing {}: {e}", path.display()))?;
    drop(file);
    let key = output_key(&spec.output.prefix, &obj.rel);
    let (store2, bucket, accept, path2) = (
        store.clone(),
        spec.output.bucket.clone(),
        spec.output.accept.clone(),
        path.clone(),
    );
    let put = blocking(move || store2.put_file(&bucket, &key, &path2, accept.as_deref())).await;
    let _ = std::fs::remove_file(&path);
    put.map_err(|e| {
        format!(
            "ClientError: storing the output of {} under s3://{}/{}: {e}",
            obj.uri(),
            spec.output.bucket,
            spec.output.prefix
        )
    })?;
    if let (Some((cpath, mut cfile)), Some(c)) = (capture, spec.capture.as_ref()) {
        cfile
            .flush()
            .map_err(|e| format!("InternalServerError: writing the data capture: {e}"))?;
        drop(cfile);
        let hour = chrono::Utc::now().format("%Y/%m/%d/%H");
        let prefix = c.prefix.trim_end_matches('/');
        let sep = if prefix.is_empty() { "" } else { "/" };
        let key = format!("{prefix}{sep}{}/{hour}/{}.jsonl", spec.job_name, obj.rel);
        let (store2, bucket, cpath2) = (store.clone(), c.bucket.clone(), cpath.clone());
        let put = blocking(move || {
            store2.put_file(&bucket, &key, &cpath2, Some("application/jsonlines"))
        })
        .await;
        let _ = std::fs::remove_file(&cpath);
        put.map_err(|e| {
            format!(
                "ClientError: storing the data capture of {}: {e}",
                obj.uri()
            )
        })?;
    }
    Ok(())
}

/// One captured request and answer, in SageMaker's data capture format.
pub(super) fn capture_line(
    sent: &[u8],
    answer: &[u8],
    content_type: Option<&str>,
    accept: Option<&str>,
    inference_id: bool,
) -> Vec<u8> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let id = uuid::Uuid::new_v4().to_string();
    let mut metadata = serde_json::json!({
        "eventId": id,
        "inferenceTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if inference_id {
        metadata["inferenceId"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
    }
    let v = serde_json::json!({
        "captureData": {
            "endpointInput": {"observedContentType": content_type.unwrap_or(""), "mode": "INPUT", "data": b64(sent), "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": accept.unwrap_or(""), "mode": "OUTPUT", "data": b64(answer), "encoding": "BASE64"},
        },
        "eventMetadata": metadata,
        "eventVersion": "0",
    });
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    line
}
