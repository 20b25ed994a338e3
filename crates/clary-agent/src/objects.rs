//! Where a host gets its objects (channels, code, checkpoints) and puts its artifacts: the
//! embedded store's directory when the host shares the server's disk (files are hard-linked
//! in, no bytes copied), or the server's S3 API over HTTP when it does not (a cluster node).
//! Every method blocks; call them from blocking threads, never on the async runtime.

use clary_sigv4::Signer;
use clary_store::{LocalStore, PutOptions};
use std::io::{self, Read};
use std::path::Path;
use tokio::runtime::Handle;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
}

#[derive(Clone)]
pub enum Objects {
    Local(LocalStore),
    Http(HttpObjects),
}

/// The server's S3 API, path-style, signed with the job's key pair.
#[derive(Clone)]
pub struct HttpObjects {
    http: reqwest::Client,
    base: String,
    signer: Signer,
    handle: Handle,
}

/// S3 keys keep `/` and RFC 3986's unreserved characters; everything else is `%XX`.
fn encode_key(key: &str) -> String {
    key.split('/')
        .map(clary_sigv4::canonical::uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn link_or_copy(source: &Path, target: &Path) -> io::Result<()> {
    std::fs::hard_link(source, target).or_else(|_| std::fs::copy(source, target).map(|_| ()))
}

impl Objects {
    /// The embedded store at `root`.
    pub fn local(root: &Path) -> Result<Self, String> {
        LocalStore::open(root)
            .map(Objects::Local)
            .map_err(|e| format!("opening the object store at {}: {e}", root.display()))
    }

    /// The S3 API at `base` (the server's URL); `handle` runs the requests.
    pub fn http(base: &str, signer: Signer, handle: Handle) -> Self {
        Objects::Http(HttpObjects {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            signer,
            handle,
        })
    }

    /// The objects under `prefix`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, String> {
        match self {
            Objects::Local(store) => store
                .list(bucket, prefix)
                .map(|v| {
                    v.into_iter()
                        .map(|m| ObjectRef {
                            key: m.key,
                            size: m.size,
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
            Objects::Http(h) => h.list(bucket, prefix),
        }
    }

    /// Reads an object as a stream.
    pub fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, String> {
        match self {
            Objects::Local(store) => store
                .open_object(bucket, key)
                .map(|(_, f)| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|e| e.to_string()),
            Objects::Http(h) => h.reader(bucket, key),
        }
    }

    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.reader(bucket, key)?
            .read_to_end(&mut out)
            .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?;
        Ok(out)
    }

    /// Makes the object appear at `target`: a hard link of the stored file when the store is
    /// local, a download otherwise.
    pub fn fetch_to(&self, bucket: &str, key: &str, target: &Path) -> Result<(), String> {
        let _ = std::fs::remove_file(target);
        if let Objects::Local(store) = self {
            for _ in 0..3 {
                let (_, source) = store.data_path(bucket, key).map_err(|e| e.to_string())?;
                // A failed link means the object was replaced since the lookup: look again.
                if link_or_copy(&source, target).is_ok() {
                    return Ok(());
                }
            }
            return Err(format!(
                "s3://{bucket}/{key} kept changing while being staged"
            ));
        }
        let mut reader = self.reader(bucket, key)?;
        let mut file = std::fs::File::create(target)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
        io::copy(&mut reader, &mut file)
            .map_err(|e| format!("downloading s3://{bucket}/{key}: {e}"))?;
        Ok(())
    }

    /// Stores what `fill` writes as an object: straight into the store when it is local,
    /// through the file `scratch` and one upload otherwise. Returns its size.
    pub fn put_written(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<&str>,
        scratch: &Path,
        fill: &mut dyn FnMut(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<u64, String> {
        match self {
            Objects::Local(store) => {
                let mut writer = store.writer(bucket, key).map_err(|e| e.to_string())?;
                fill(&mut writer).map_err(|e| e.to_string())?;
                let opts = PutOptions {
                    content_type: content_type.map(String::from),
                    ..PutOptions::default()
                };
                writer
                    .commit(opts)
                    .map(|m| m.size)
                    .map_err(|e| e.to_string())
            }
            Objects::Http(_) => {
                let result = (|| {
                    let mut file = io::BufWriter::new(
                        std::fs::File::create(scratch)
                            .map_err(|e| format!("creating {}: {e}", scratch.display()))?,
                    );
                    fill(&mut file).map_err(|e| e.to_string())?;
                    io::Write::flush(&mut file).map_err(|e| e.to_string())?;
                    drop(file);
                    self.put_file(bucket, key, scratch, content_type)
                })();
                let _ = std::fs::remove_file(scratch);
                result
            }
        }
    }

    /// Stores the file at `path` as an object; returns its size.
    pub fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, String> {
        match self {
            Objects::Local(_) => {
                let mut file = std::fs::File::open(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                self.put_written(bucket, key, content_type, path, &mut |w| {
                    io::copy(&mut file, w).map(|_| ())
                })
            }
            Objects::Http(h) => h.put_file(bucket, key, path, content_type),
        }
    }
}

impl HttpObjects {
    /// A signed request; the payload is not hashed (S3's `UNSIGNED-PAYLOAD`), so a large
    /// upload streams from its file.
    fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        extra: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = format!("{}{path_and_query}", self.base);
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-amz-content-sha256",
            http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        for (k, v) in extra {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                v.parse().map_err(|_| format!("bad header value for {k}"))?,
            );
        }
        self.signer.sign_with_payload_hash(
            "s3",
            &method,
            &uri,
            &mut headers,
            "UNSIGNED-PAYLOAD",
            chrono::Utc::now(),
        )?;
        let mut req = self.http.request(method, &url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_bytes());
        }
        Ok(req)
    }

    fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, String> {
        self.handle.block_on(async {
            let resp = req.send().await.map_err(|e| format!("{what}: {e}"))?;
            if resp.status().is_success() {
                Ok(resp)
            } else {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                Err(format!(
                    "{what}: HTTP {status}: {}",
                    s3_error_message(&body)
                ))
            }
        })
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!(
                "/{}?list-type=2&prefix={}",
                encode_key(bucket),
                clary_sigv4::canonical::uri_encode(prefix)
            );
            if let Some(t) = &token {
                q.push_str("&continuation-token=");
                q.push_str(&clary_sigv4::canonical::uri_encode(t));
            }
            let what = format!("listing s3://{bucket}/{prefix}");
            let resp = self.send(self.request(reqwest::Method::GET, &q, &[])?, &what)?;
            let body = self
                .handle
                .block_on(resp.text())
                .map_err(|e| format!("{what}: {e}"))?;
            let page = parse_list(&body).map_err(|e| format!("{what}: {e}"))?;
            out.extend(page.objects);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, String> {
        let path = format!("/{}/{}", encode_key(bucket), encode_key(key));
        let what = format!("reading s3://{bucket}/{key}");
        let resp = self.send(self.request(reqwest::Method::GET, &path, &[])?, &what)?;
        // The body streams through a small bounded channel: the reader's pace is the download's.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(8);
        self.handle.spawn(async move {
            let mut resp = resp;
            loop {
                let item = match resp.chunk().await {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => return,
                    Err(e) => Err(io::Error::other(e.to_string())),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::new(ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }))
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .len();
        let mut extra = vec![("content-length", size.to_string())];
        if let Some(ct) = content_type {
            extra.push(("content-type", ct.to_string()));
        }
        let target = format!("/{}/{}", encode_key(bucket), encode_key(key));
        let req = self.request(reqwest::Method::PUT, &target, &extra)?;
        let file = self
            .handle
            .block_on(tokio::fs::File::open(path))
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.send(
            req.body(reqwest::Body::from(file)),
            &format!("uploading s3://{bucket}/{key}"),
        )?;
        Ok(size)
    }
}

/// A `Read` over the chunks a download task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                // The sender is gone after the last chunk: end of the object.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// One page of `ListObjectsV2`.
#[derive(Debug, Default, PartialEq)]
struct ListPage {
    objects: Vec<ObjectRef>,
    next: Option<String>,
}

fn parse_list(xml: &str) -> Result<ListPage, String> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| format!("bad listing XML: {e}");
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut page = ListPage::default();
    let mut path: Vec<String> = Vec::new();
    // An element's text arrives in pieces: plain runs and entity references (`&amp;`).
    let mut text = String::new();
    let (mut key, mut size) = (String::new(), 0u64);
    let mut truncated = false;
    let mut token = None;
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| bad(&e))?;
                let entity = format!("&{name};");
                text.push_str(&quick_xml::escape::unescape(&entity).map_err(|e| bad(&e))?);
            }
            Event::End(_) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    [.., "Contents", "Key"] => key = std::mem::take(&mut text),
                    [.., "Contents", "Size"] => size = text.trim().parse().unwrap_or(0),
                    [.., "Contents"] => {
                        page.objects.push(ObjectRef {
                            key: std::mem::take(&mut key),
                            size,
                        });
                        size = 0;
                    }
                    [.., "IsTruncated"] => truncated = text.trim() == "true",
                    [.., "NextContinuationToken"] => token = Some(std::mem::take(&mut text)),
                    _ => {}
                }
                text.clear();
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    page.next = if truncated { token } else { None };
    Ok(page)
}

/// The `<Message>` of an S3 error body, or the body itself.
fn s3_error_message(body: &str) -> String {
    body.split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(m, _)| m.to_string())
        .unwrap_or_else(|| body.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse_with_escaped_keys_and_paging() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>d/</Prefix>
<Contents><Key>d/a&amp;b.txt</Key><Size>3</Size></Contents>
<Contents><Key>d/c</Key><Size>10</Size></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok==</NextContinuationToken></ListBucketResult>"#;
        let page = parse_list(xml).unwrap();
        assert_eq!(
            page.objects,
            vec![
                ObjectRef {
                    key: "d/a&b.txt".into(),
                    size: 3
                },
                ObjectRef {
                    key: "d/c".into(),
                    size: 10
                }
            ]
        );
        assert_eq!(page.next.as_deref(), Some("tok=="));
        assert_eq!(encode_key("a b/c+d"), "a%20b/c%2Bd");
        assert_eq!(
            s3_error_message("<Error><Message>No such key</Message></Error>"),
            "No such key"
        );
    }
}
