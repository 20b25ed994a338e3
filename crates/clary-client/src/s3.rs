//! S3 calls, path-style: `/<bucket>/<key>`. Keys are encoded once, by [`encode_key`]; listings
//! and error answers are read with an XML parser.

use crate::{ClientError, ServiceError, SignedClient, header_value, payload_hash};
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::path::Path;

/// RFC 3986's unreserved characters stay as they are; everything else is `%XX` of its UTF-8.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A key's `/` separates path segments and stays too.
const KEY: &AsciiSet = &QUERY_VALUE.remove(b'/');

/// The body hash SigV4 signs for an upload streamed from disk.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A key (or bucket) as it goes into a request path, the way botocore encodes it: `/` and the
/// unreserved characters `A-Z a-z 0-9 - . _ ~` as they are, every other byte of the key's UTF-8
/// as `%XX` (so a space is `%20`, never `+`, and a `+` is `%2B`). The server signs and
/// decodes this path exactly as sent, so the key comes back byte for byte.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string()
}

/// A query-string value: like [`encode_key`], with `/` encoded too.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

fn object_path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode_key(bucket), encode_key(key))
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// As the listing says it (ISO 8601), when it does.
    pub last_modified: Option<String>,
}

/// One page of `ListObjectsV2`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// With a delimiter: the key prefixes rolled up into one entry each.
    pub common_prefixes: Vec<String>,
    /// The token of the next page; `None` on the last one.
    pub next_token: Option<String>,
}

/// What `HEAD` says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    pub content_type: Option<String>,
}

/// The body of a `GET`, as it arrives.
pub struct ObjectBody(reqwest::Response);

impl From<reqwest::Response> for ObjectBody {
    fn from(resp: reqwest::Response) -> Self {
        ObjectBody(resp)
    }
}

impl ObjectBody {
    /// The object's size, when the server said.
    pub fn content_length(&self) -> Option<u64> {
        self.0.content_length()
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        Ok(self.0.chunk().await?)
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        Ok(self.0.bytes().await?)
    }
}

impl SignedClient {
    /// A request without a body.
    async fn s3_bodiless(
        &self,
        method: http::Method,
        path_and_query: &str,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(
            "s3",
            method,
            path_and_query,
            http::HeaderMap::new(),
            reqwest::Body::from(Vec::new()),
            &payload_hash(b""),
        )
        .await
    }

    /// `GET` of an object; its body streams as it is read.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<ObjectBody, ClientError> {
        let resp = self
            .s3_bodiless(http::Method::GET, &object_path(bucket, key))
            .await?;
        Ok(ObjectBody(checked(resp).await?))
    }

    /// `HEAD` of an object: `None` when there is no such object.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectHead>, ClientError> {
        let resp = self
            .s3_bodiless(http::Method::HEAD, &object_path(bucket, key))
            .await?;
        if resp.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = checked(resp).await?;
        let header = |name: http::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(Some(ObjectHead {
            size: header(http::header::CONTENT_LENGTH)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header(http::header::ETAG),
            content_type: header(http::header::CONTENT_TYPE),
        }))
    }

    /// `HEAD` of a bucket: whether it exists (and may be used with these keys).
    pub async fn head_bucket(&self, bucket: &str) -> Result<bool, ClientError> {
        let resp = self
            .s3_bodiless(http::Method::HEAD, &format!("/{}", encode_key(bucket)))
            .await?;
        Ok(resp.status().is_success())
    }

    /// `PUT` of the file at `path`, streamed from disk (the payload is not hashed: S3's
    /// `UNSIGNED-PAYLOAD`); `progress` gets the size of each piece sent. Returns the size.
    pub async fn put_object_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<u64, ClientError> {
        let url = format!("{}{}", self.base_url(), object_path(bucket, key));
        self.put_file_url(&url, path, content_type, progress).await
    }

    /// [`put_object_file`](Self::put_object_file) to a whole object URL.
    pub async fn put_file_url(
        &self,
        url: &str,
        path: &Path,
        content_type: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<u64, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.to_path_buf(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(file_error)?;
        let len = file.metadata().await.map_err(file_error)?.len();
        let stream = futures::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let stream = futures::StreamExt::inspect(stream, move |piece| {
            if let Ok(b) = piece {
                progress(b.len() as u64)
            }
        });
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, len.into());
        if let Some(ct) = content_type {
            headers.insert(
                http::header::CONTENT_TYPE,
                header_value("content-type", ct)?,
            );
        }
        let resp = self
            .send_url(
                "s3",
                http::Method::PUT,
                url,
                headers,
                reqwest::Body::wrap_stream(stream),
                UNSIGNED_PAYLOAD,
            )
            .await?;
        checked(resp).await?;
        Ok(len)
    }

    /// One page of `ListObjectsV2` under `prefix`, from `token` (the previous page's
    /// [`ListPage::next_token`]) on; with a `delimiter`, keys are rolled up at it.
    pub async fn list_objects_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, ClientError> {
        let mut q = format!(
            "/{}?list-type=2&prefix={}",
            encode_key(bucket),
            encode_query_value(prefix)
        );
        if let Some(d) = delimiter {
            q.push_str("&delimiter=");
            q.push_str(&encode_query_value(d));
        }
        if let Some(t) = token {
            q.push_str("&continuation-token=");
            q.push_str(&encode_query_value(t));
        }
        let resp = checked(self.s3_bodiless(http::Method::GET, &q).await?).await?;
        parse_list_page(&resp.text().await?).map_err(ClientError::BadListing)
    }

    /// Every object under `prefix`, in key order, page after page.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ListedObject>, ClientError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_objects_page(bucket, prefix, None, token.as_deref())
                .await?;
            out.extend(page.objects);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }
}

/// The response when it succeeded, its S3 error otherwise.
pub async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(ClientError::S3(s3_error(status, &body)))
}

/// Walks an XML document and hands each element, as it closes, to `on_end`: the local names
/// from the root down to it, and its text (entities resolved). The root closes last, so a
/// `[name]` path names the document's root.
pub fn walk_xml(xml: &str, mut on_end: impl FnMut(&[&str], String)) -> Result<(), String> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| e.to_string();
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    // An element's text arrives in pieces: plain runs, entity references and CDATA.
    let mut text = String::new();
    let mut close = |path: &mut Vec<String>, text: &mut String| {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        on_end(&names, std::mem::take(text));
        path.pop();
    };
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Event::Empty(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
                close(&mut path, &mut text);
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c.into_inner())),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| bad(&e))?;
                let entity = format!("&{name};");
                text.push_str(&quick_xml::escape::unescape(&entity).map_err(|e| bad(&e))?);
            }
            Event::End(_) => close(&mut path, &mut text),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// Reads a `ListBucketResult` (ListObjectsV2). A page that is not truncated has no next token,
/// whatever else it says.
pub fn parse_list_page(xml: &str) -> Result<ListPage, String> {
    let mut page = ListPage::default();
    let (mut key, mut size, mut modified) = (String::new(), 0u64, None);
    let (mut truncated, mut token) = (false, None);
    let mut root = None;
    walk_xml(xml, |path, text| match path {
        [_, "Contents", "Key"] => key = text,
        [_, "Contents", "Size"] => size = text.trim().parse().unwrap_or(0),
        [_, "Contents", "LastModified"] => modified = Some(text),
        [_, "Contents"] => page.objects.push(ListedObject {
            key: std::mem::take(&mut key),
            size: std::mem::take(&mut size),
            last_modified: modified.take(),
        }),
        [_, "CommonPrefixes", "Prefix"] => page.common_prefixes.push(text),
        [_, "IsTruncated"] => truncated = text.trim() == "true",
        [_, "NextContinuationToken"] => token = Some(text),
        [name] => root = Some(name.to_string()),
        _ => {}
    })?;
    match root.as_deref() {
        Some("ListBucketResult") => {}
        Some(other) => return Err(format!("expected ListBucketResult, got {other}")),
        None => return Err("the answer is empty".into()),
    }
    page.next_token = if truncated { token } else { None };
    Ok(page)
}

/// An S3 error answer: `<Error><Code>` and `<Message>`. An answer without a code (a `HEAD`'s, a
/// proxy's page) keeps its first 300 characters as the message and the status as the code; one
/// with a code and no message (Ceph RGW's often) has an empty message.
pub fn s3_error(status: http::StatusCode, body: &str) -> ServiceError {
    let (mut code, mut message) = (None, None);
    // A body that stops being XML part-way keeps what was read before.
    let _ = walk_xml(body, |path, text| match path {
        ["Error", "Code"] => code = Some(text),
        ["Error", "Message"] => message = Some(text),
        _ => {}
    });
    let message = match (&code, message) {
        (_, Some(m)) => m,
        (Some(_), None) => String::new(),
        (None, None) => body.chars().take(300).collect(),
    };
    ServiceError {
        status,
        code: code.unwrap_or_else(|| status.as_u16().to_string()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_as_s3_signs_them() {
        assert_eq!(encode_key("plain/key.txt"), "plain/key.txt");
        assert_eq!(encode_key("with space/a b"), "with%20space/a%20b");
        assert_eq!(encode_key("c+d"), "c%2Bd");
        assert_eq!(encode_key("tilde~stays_-."), "tilde~stays_-.");
        assert_eq!(encode_key("ünï.txt"), "%C3%BCn%C3%AF.txt");
        assert_eq!(encode_key("日本/語"), "%E6%97%A5%E6%9C%AC/%E8%AA%9E");
        assert_eq!(encode_key("a//b/"), "a//b/");
        assert_eq!(encode_key("/lead"), "/lead");
        assert_eq!(
            encode_key("sub/with space+plus&amp.txt"),
            "sub/with%20space%2Bplus%26amp.txt"
        );
        assert_eq!(encode_key("q?x=1#f%"), "q%3Fx%3D1%23f%25");
        // In a query value the slash is encoded as well.
        assert_eq!(encode_query_value("d/e f+g~"), "d%2Fe%20f%2Bg~");
        // The encoder and the signer agree: the canonical form of an encoded path is itself.
        let path = format!("/b/{}", encode_key("sub/ünï +~x"));
        assert_eq!(clary_sigv4::canonical_uri(&path, true), path);
    }

    #[test]
    fn a_truncated_listing_carries_its_continuation_token() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>d/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
<Contents><Key>d/a&amp;b.txt</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>3</Size></Contents>
<Contents><Key>d/&#252;n&#xEF; +.txt</Key><Size>10</Size></Contents>
<IsTruncated>true</IsTruncated><ContinuationToken>t0</ContinuationToken><NextContinuationToken>tok==/+</NextContinuationToken></ListBucketResult>"#;
        let page = parse_list_page(xml).unwrap();
        assert_eq!(
            page.objects,
            [
                ListedObject {
                    key: "d/a&b.txt".into(),
                    size: 3,
                    last_modified: Some("2024-01-01T00:00:00.000Z".into()),
                },
                ListedObject {
                    key: "d/ünï +.txt".into(),
                    size: 10,
                    last_modified: None,
                }
            ]
        );
        assert!(page.common_prefixes.is_empty());
        assert_eq!(page.next_token.as_deref(), Some("tok==/+"));
    }

    #[test]
    fn a_delimited_listing_rolls_keys_up_into_common_prefixes() {
        let xml = r#"<ListBucketResult><Name>b</Name><Prefix>p/</Prefix><Delimiter>/</Delimiter>
<Contents><Key>p/top.txt</Key><Size>1</Size></Contents>
<CommonPrefixes><Prefix>p/a dir/</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix><![CDATA[p/b&c/]]></Prefix></CommonPrefixes>
<IsTruncated>false</IsTruncated><NextContinuationToken>ignored</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_list_page(xml).unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0].key, "p/top.txt");
        // The listing's own <Prefix> is not a common prefix.
        assert_eq!(page.common_prefixes, ["p/a dir/", "p/b&c/"]);
        assert_eq!(page.next_token, None);
        let empty = parse_list_page("<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>").unwrap();
        assert_eq!(empty, ListPage::default());
    }

    #[test]
    fn what_is_not_a_listing_is_an_error() {
        assert!(parse_list_page("<Error><Code>NoSuchBucket</Code></Error>").is_err());
        assert!(parse_list_page("").is_err());
        assert!(parse_list_page("<ListBucketResult><Contents></Oops>").is_err());
    }

    #[test]
    fn s3_errors_keep_code_and_message() {
        let e = s3_error(
            http::StatusCode::NOT_FOUND,
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist: a &lt;b&gt;</Message><Key>a</Key></Error>",
        );
        assert_eq!(e.code, "NoSuchKey");
        assert_eq!(e.message, "The specified key does not exist: a <b>");
        let e = s3_error(http::StatusCode::BAD_GATEWAY, "upstream went away");
        assert_eq!(e.code, "502");
        assert_eq!(e.message, "upstream went away");
        let e = s3_error(http::StatusCode::NOT_FOUND, "");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("404", ""));
        // Ceph RGW leaves the message out: the answer's XML is not a message.
        let e = s3_error(
            http::StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code><BucketName>b</BucketName></Error>",
        );
        assert_eq!((e.code.as_str(), e.message.as_str()), ("NoSuchKey", ""));
        assert_eq!(
            ClientError::S3(s3_error(
                http::StatusCode::FORBIDDEN,
                "<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
            ))
            .to_string(),
            "HTTP 403 Forbidden: no"
        );
    }
}
