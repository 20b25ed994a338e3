//! The worker protocol: a big-endian `u32` header length, a JSON header, then the raw bodies
//! of the items the header lists, each item carrying its body's length. Bodies are copied, never
//! re-encoded.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest header accepted from a worker; bodies are bounded by the payload limit.
const MAX_HEADER: usize = 1 << 20;

/// One request of a batch, as the worker sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestItem {
    pub len: usize,
    /// `Content-Type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    /// `X-Amzn-SageMaker-Custom-Attributes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A CSV body already read ([`crate::csv::numbers`]): the body is its values as
    /// little-endian f64, in this shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
}

/// One answer of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseItem {
    pub len: usize,
    pub status: u16,
    pub ct: String,
    #[serde(default)]
    pub ca: Option<String>,
}

/// The worker's first message: whether it loaded the model.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub ready: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub fused: bool,
}

#[derive(Serialize, Deserialize)]
struct Batch<T> {
    items: Vec<T>,
}

pub async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    items: &[RequestItem],
    bodies: &[&Bytes],
) -> std::io::Result<()> {
    let header = serde_json::to_vec(&Batch {
        items: items.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let total: usize = bodies.iter().map(|b| b.len()).sum();
    let mut buf = BytesMut::with_capacity(4 + header.len() + total.min(1 << 16));
    buf.extend_from_slice(&(header.len() as u32).to_be_bytes());
    buf.extend_from_slice(&header);
    // Small bodies go out in the same write as the header; large ones are written as they are.
    if total <= 1 << 16 {
        for b in bodies {
            buf.extend_from_slice(b);
        }
        w.write_all(&buf).await?;
    } else {
        w.write_all(&buf).await?;
        for b in bodies {
            w.write_all(b).await?;
        }
    }
    w.flush().await
}

async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let size = r.read_u32().await? as usize;
    if size > MAX_HEADER {
        return Err(std::io::Error::other(format!(
            "worker sent a {size}-byte header"
        )));
    }
    let mut header = vec![0; size];
    r.read_exact(&mut header).await?;
    Ok(header)
}

pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Hello> {
    let header = read_header(r).await?;
    serde_json::from_slice(&header).map_err(std::io::Error::other)
}

pub async fn read_batch<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Vec<(ResponseItem, Bytes)>> {
    let header = read_header(r).await?;
    let batch: Batch<ResponseItem> =
        serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(batch.items.len());
    for item in batch.items {
        let mut body = BytesMut::zeroed(item.len);
        r.read_exact(&mut body).await?;
        out.push((item, body.freeze()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_round_trip_with_raw_bodies() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let big = Bytes::from(vec![7u8; 200_000]);
        let small = Bytes::from_static(b"[1, 2]");
        let items = vec![
            RequestItem {
                len: big.len(),
                ct: Some("application/x-npy".into()),
                accept: None,
                ca: Some("trace=1".into()),
                shape: None,
            },
            RequestItem {
                len: small.len(),
                ct: Some("application/json".into()),
                accept: Some("text/csv".into()),
                ca: None,
                shape: Some(vec![1, 2]),
            },
        ];
        write_batch(&mut a, &items, &[&big, &small]).await.unwrap();
        let size = b.read_u32().await.unwrap() as usize;
        let mut header = vec![0; size];
        b.read_exact(&mut header).await.unwrap();
        let got: Batch<RequestItem> = serde_json::from_slice(&header).unwrap();
        assert_eq!(got.items, items);
        let mut body = vec![0; big.len()];
        b.read_exact(&mut body).await.unwrap();
        assert_eq!(body, big.to_vec());
        let mut body = vec![0; small.len()];
        b.read_exact(&mut body).await.unwrap();
        assert_eq!(body, small.to_vec());
    }

    #[tokio::test]
    async fn reads_a_response_batch() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let header = br#"{"items":[{"len":3,"status":200,"ct":"text/csv","ca":null},{"len":0,"status":415,"ct":"text/plain"}]}"#;
        a.write_u32(header.len() as u32).await.unwrap();
        a.write_all(header).await.unwrap();
        a.write_all(b"1,2").await.unwrap();
        let got = read_batch(&mut b).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.as_ref(), b"1,2");
        assert_eq!(got[1].0.status, 415);
        assert!(got[1].1.is_empty());
    }
}
