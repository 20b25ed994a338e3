//! A transform host's share of the input objects, read in order, split and batched.

use super::records::{Batch, Batcher, Records, Split, Strategy};
use super::shaping::Shaping;
use crate::objects::Objects;
use crate::staging::{parse_manifest, relative_key};
use clary_exec::protocol::TransformHostSpec;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// One input object of this host's share.
#[derive(Debug, Clone)]
pub(super) struct InputObject {
    pub(super) bucket: String,
    pub(super) key: String,
    /// Its key relative to the input prefix: the output is `<output prefix>/<rel>.out`.
    pub(super) rel: String,
}

impl InputObject {
    pub(super) fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// This host's objects: all of them in key (or manifest) order, host `i` of `N` taking
/// `i, i+N, …`.
pub(super) fn share(store: &Objects, spec: &TransformHostSpec) -> Result<Vec<InputObject>, String> {
    let input = &spec.input;
    let all: Vec<InputObject> = if input.data_type == "ManifestFile" {
        let text = store.get_bytes(&input.bucket, &input.prefix).map_err(|e| {
            format!(
                "ClientError: reading the manifest s3://{}/{}: {e}",
                input.bucket, input.prefix
            )
        })?;
        parse_manifest(&String::from_utf8_lossy(&text))
            .map_err(|e| {
                format!(
                    "ClientError: the manifest s3://{}/{}: {e}",
                    input.bucket, input.prefix
                )
            })?
            .into_iter()
            .map(|o| InputObject {
                bucket: o.bucket,
                key: o.key,
                rel: o.rel,
            })
            .collect()
    } else {
        store
            .list(&input.bucket, &input.prefix)
            .map_err(|e| {
                format!(
                    "ClientError: listing s3://{}/{}: {e}",
                    input.bucket, input.prefix
                )
            })?
            .into_iter()
            // "Directory" markers hold no records.
            .filter(|o| !o.key.ends_with('/'))
            .map(|o| InputObject {
                bucket: input.bucket.clone(),
                rel: relative_key(&input.prefix, &o.key),
                key: o.key,
            })
            .collect()
    };
    if all.is_empty() {
        return Err(format!(
            "ClientError: no objects found under s3://{}/{}; check TransformInput.DataSource.S3DataSource.S3Uri",
            input.bucket, input.prefix
        ));
    }
    let index = spec
        .hosts
        .iter()
        .position(|h| h == &spec.current_host)
        .unwrap_or(0);
    let n = spec.hosts.len().max(1);
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == index)
        .map(|(_, o)| o)
        .collect())
}

/// What the reader thread hands the sender, in input order.
pub(super) enum Item {
    Batch {
        object: usize,
        batch: Batch,
        /// The batch's original records, for a join.
        inputs: Vec<Vec<u8>>,
    },
    /// Every batch of this object has been handed over.
    End { object: usize },
}

/// The settings the batches are made with.
#[derive(Clone, Copy)]
pub(super) struct Batching {
    pub(super) split: Split,
    pub(super) strategy: Strategy,
    pub(super) max_payload_mb: u64,
    pub(super) gzip: bool,
}

/// Reads the objects in order, splits and batches them; stops at the first bad record
/// (`Err` names the object and the record).
pub(super) fn read_objects(
    store: Objects,
    objects: Vec<InputObject>,
    batching: Batching,
    shaping: Arc<Shaping>,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Item>,
) -> Result<(), String> {
    for (i, obj) in objects.iter().enumerate() {
        let reader = store
            .reader(&obj.bucket, &obj.key)
            .map_err(|e| format!("ClientError: reading {}: {e}", obj.uri()))?;
        let reader: Box<dyn std::io::Read + Send> = if batching.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else {
            reader
        };
        let mut batcher = Batcher::new(batching.strategy, batching.split, batching.max_payload_mb);
        let mut inputs = Vec::new();
        let send = |batch: Batch, inputs: Vec<Vec<u8>>| {
            tx.blocking_send(Item::Batch {
                object: i,
                batch,
                inputs,
            })
            .map_err(|_| "stopped".to_string())
        };
        for record in Records::new(reader, batching.split) {
            if stop.load(Ordering::SeqCst) {
                return Err("stopped".into());
            }
            let mut record = record.map_err(|e| {
                let what = if batching.gzip && e.kind() != std::io::ErrorKind::InvalidData {
                    format!("{e} (CompressionType is Gzip: is the object gzip-compressed?)")
                } else {
                    e.to_string()
                };
                format!("ClientError: {}: {what}", obj.uri())
            })?;
            let at = record.at;
            let original = shaping.keeps_inputs().then(|| record.data.clone());
            record.data = shaping
                .input(std::mem::take(&mut record.data))
                .map_err(|e| format!("ClientError: {}, {at}: {e}", obj.uri()))?;
            let done = batcher
                .push(record)
                .map_err(|e| format!("ClientError: {}, {e}", obj.uri()))?;
            if let Some(batch) = done {
                // The originals so far are exactly the finished batch's records.
                send(batch, std::mem::take(&mut inputs))?;
            }
            if let Some(o) = original {
                inputs.push(o);
            }
        }
        if let Some(batch) = batcher.take() {
            send(batch, std::mem::take(&mut inputs))?;
        }
        tx.blocking_send(Item::End { object: i })
            .map_err(|_| "stopped".to_string())?;
    }
    Ok(())
}
