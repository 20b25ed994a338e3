//! An external S3-compatible store (Ceph RGW, MinIO, Garage, AWS S3) that holds Clary's
//! buckets instead of the local directory: where it is, how its buckets are named and
//! addressed, and its key pair, which never leaves the server. The server reaches it with
//! header-signed requests ([`ExternalStore::send`]); hosts reach it with URLs the server
//! presigns for them, one request each ([`ExternalStore::presign`]).
//!
//! Clary's bucket `b` is the store's bucket `<bucket_prefix>b`, so several servers (or a
//! team's own buckets) can share one store; with an empty prefix the names are the same and
//! clients may use the store directly too.

use crate::{ObjectError, ObjectRef, ObjectStore};
use clary_client::s3::{encode_key, encode_query_value};
use clary_client::{ClientError, SignedClient};
use clary_sigv4::Signer;
use std::io::Read;
use std::path::Path;
use tokio::runtime::Handle;

/// How a bucket is named in a request's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `http://host/bucket/key` (Ceph RGW, MinIO and Garage by default).
    Path,
    /// `http://bucket.host/key` (AWS S3's default).
    VirtualHost,
}

/// Where an external store is and how to sign for it.
#[derive(Debug, Clone)]
pub struct ExternalStoreConfig {
    /// `scheme://host[:port]`, without a path.
    pub endpoint: String,
    /// Prepended to each of Clary's bucket names to give the store's.
    pub bucket_prefix: String,
    pub addressing: Addressing,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

/// How long a connection to the store may take to open.
pub const STORE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the store may leave a request without a byte of its answer.
pub const STORE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Presigned URLs stay valid this long: long enough for one part or object to start.
pub const PRESIGNED_SECS: u64 = 3600;

/// An external S3 store and the server's client of it.
#[derive(Clone)]
pub struct ExternalStore {
    config: ExternalStoreConfig,
    signer: Signer,
    client: SignedClient,
    /// Runs the requests of the blocking [`ObjectStore`] methods.
    handle: Handle,
}

impl std::fmt::Debug for ExternalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ExternalStore {
    /// The store `config` names; `handle` runs the blocking methods' requests.
    pub fn new(config: ExternalStoreConfig, handle: Handle) -> Result<Self, String> {
        let endpoint = config.endpoint.trim_end_matches('/').to_string();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("the object store endpoint {endpoint:?} is not a URL: {e}"))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(format!(
                "the object store endpoint {endpoint:?} needs a scheme and host, like http://127.0.0.1:7480"
            ));
        }
        if !matches!(uri.path(), "" | "/") {
            return Err(format!(
                "the object store endpoint {endpoint:?} has a path; give scheme://host:port only"
            ));
        }
        let signer = Signer {
            access_key: config.access_key.clone(),
            secret_key: config.secret_key.clone(),
            region: config.region.clone(),
        };
        // A store that accepts a connection and then says nothing must not hang a client's
        // call (or a job) for ever: each connect, and each wait for bytes, is bounded.
        let http = clary_client::http_client_builder()
            .connect_timeout(STORE_CONNECT_TIMEOUT)
            .read_timeout(STORE_READ_TIMEOUT)
            .build()
            .map_err(|e| format!("building the object store's HTTP client: {e}"))?;
        let client = SignedClient::with_http(&endpoint, signer.clone(), http);
        Ok(ExternalStore {
            config: ExternalStoreConfig { endpoint, ..config },
            signer,
            client,
            handle,
        })
    }

    pub fn config(&self) -> &ExternalStoreConfig {
        &self.config
    }

    /// For messages: which store, without its keys.
    pub fn describe(&self) -> String {
        format!(
            "the object store at {} (buckets s3://{}*)",
            self.config.endpoint, self.config.bucket_prefix
        )
    }

    /// The store's name for Clary's bucket `bucket`.
    pub fn store_bucket(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.config.bucket_prefix)
    }

    /// Clary's name for the store's bucket `store_bucket`; `None` for a bucket outside the
    /// prefix (not Clary's).
    pub fn clary_bucket<'a>(&self, store_bucket: &'a str) -> Option<&'a str> {
        store_bucket
            .strip_prefix(self.config.bucket_prefix.as_str())
            .filter(|b| !b.is_empty())
    }

    /// The URL of Clary's `bucket` (and `key`, when given) in the store, with `query`
    /// (already encoded, without `?`) appended.
    pub fn url(&self, bucket: Option<&str>, key: Option<&str>, query: &str) -> String {
        let (scheme, authority) = self
            .config
            .endpoint
            .split_once("://")
            .expect("the endpoint was checked to have a scheme");
        let mut url = match (bucket, self.config.addressing) {
            (None, _) => format!("{scheme}://{authority}/"),
            (Some(b), Addressing::Path) => {
                format!(
                    "{scheme}://{authority}/{}",
                    encode_key(&self.store_bucket(b))
                )
            }
            (Some(b), Addressing::VirtualHost) => {
                format!("{scheme}://{}.{authority}", self.store_bucket(b))
            }
        };
        match (bucket, key) {
            (Some(_), Some(k)) => {
                url.push('/');
                url.push_str(&encode_key(k));
            }
            (Some(_), None) if self.config.addressing == Addressing::VirtualHost => url.push('/'),
            _ => {}
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// A URL that lets its holder make one `method` request on `url` (from [`Self::url`])
    /// for [`PRESIGNED_SECS`], signed with the store's key pair.
    pub fn presign(&self, method: &http::Method, url: &str) -> Result<String, String> {
        self.signer
            .presign("s3", method, url, PRESIGNED_SECS, chrono::Utc::now())
    }

    /// Signs and sends one request to `url` (from [`Self::url`]). `payload_hash` is the body's
    /// SHA-256 or `UNSIGNED-PAYLOAD`. Any status comes back as a response.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: http::HeaderMap,
        body: reqwest::Body,
        payload_hash: &str,
    ) -> Result<reqwest::Response, ClientError> {
        self.client
            .send_url("s3", method, url, headers, body, payload_hash)
            .await
    }

    fn remote(&self, what: String) -> impl FnOnce(ClientError) -> ObjectError + '_ {
        move |source| ObjectError::Remote {
            what: format!("{what} in {}", self.describe()),
            source,
        }
    }

    /// A bodiless request, checked: an error status becomes an error.
    async fn call(
        &self,
        method: http::Method,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .send(
                method,
                url,
                http::HeaderMap::new(),
                reqwest::Body::from(Vec::new()),
                &clary_client::payload_hash(b""),
            )
            .await?;
        clary_client::s3::checked(resp).await
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.handle.block_on(f))
    }

    /// The body of a CreateBucket in the store: none in us-east-1 (which refuses its own name as
    /// a constraint, as Ceph RGW does), the store's region as the location constraint elsewhere.
    pub fn create_bucket_body(&self) -> Vec<u8> {
        if self.config.region == "us-east-1" {
            return Vec::new();
        }
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            self.config.region
        )
        .into_bytes()
    }

    /// Whether Clary's bucket exists in the store (and its key may use it).
    pub async fn bucket_exists_async(&self, bucket: &str) -> Result<bool, ClientError> {
        let url = self.url(Some(bucket), None, "");
        let resp = self
            .send(
                http::Method::HEAD,
                &url,
                http::HeaderMap::new(),
                reqwest::Body::from(Vec::new()),
                &clary_client::payload_hash(b""),
            )
            .await?;
        Ok(resp.status().is_success())
    }

    /// Creates Clary's bucket in the store; one that exists already (and is ours) is fine.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), ClientError> {
        if self.bucket_exists_async(bucket).await? {
            return Ok(());
        }
        let url = self.url(Some(bucket), None, "");
        let mut headers = http::HeaderMap::new();
        let body = self.create_bucket_body();
        headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        let hash = clary_client::payload_hash(&body);
        let resp = self
            .send(http::Method::PUT, &url, headers, body.into(), &hash)
            .await?;
        match clary_client::s3::checked(resp).await {
            Ok(_) => Ok(()),
            Err(ClientError::S3(e)) if e.code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl ObjectStore for ExternalStore {
    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectRef>, ObjectError> {
        self.block(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut query = format!("list-type=2&prefix={}", encode_query_value(prefix));
                if let Some(t) = &token {
                    query.push_str("&continuation-token=");
                    query.push_str(&encode_query_value(t));
                }
                let url = self.url(Some(bucket), None, &query);
                let resp = self.call(http::Method::GET, &url).await?;
                let page = clary_client::s3::parse_list_page(&resp.text().await?)
                    .map_err(ClientError::BadListing)?;
                out.extend(page.objects.into_iter().map(ObjectRef::listed));
                match page.next_token {
                    Some(t) => token = Some(t),
                    None => return Ok(out),
                }
            }
        })
        .map_err(self.remote(format!("listing s3://{bucket}/{prefix}")))
    }

    fn reader(&self, bucket: &str, key: &str) -> Result<Box<dyn Read + Send>, ObjectError> {
        let url = self.url(Some(bucket), Some(key), "");
        let resp = self
            .block(self.call(http::Method::GET, &url))
            .map_err(self.remote(format!("reading s3://{bucket}/{key}")))?;
        Ok(crate::s3_http::response_reader(resp, &self.handle))
    }

    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<u64, ObjectError> {
        let url = self.url(Some(bucket), Some(key), "");
        self.block(self.client.put_file_url(&url, path, content_type, |_| {}))
            .map_err(self.remote(format!("uploading s3://{bucket}/{key}")))
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        self.block(self.bucket_exists_async(bucket))
            .map_err(self.remote(format!("looking for the bucket {bucket}")))
    }

    fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError> {
        let url = self.url(Some(bucket), Some(key), "");
        let resp = self
            .block(self.send(
                http::Method::HEAD,
                &url,
                http::HeaderMap::new(),
                reqwest::Body::from(Vec::new()),
                &clary_client::payload_hash(b""),
            ))
            .map_err(self.remote(format!("looking for s3://{bucket}/{key}")))?;
        if resp.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self
            .block(clary_client::s3::checked(resp))
            .map_err(self.remote(format!("looking for s3://{bucket}/{key}")))?;
        Ok(Some(
            resp.headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(prefix: &str, addressing: Addressing) -> ExternalStore {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        ExternalStore::new(
            ExternalStoreConfig {
                endpoint: "http://127.0.0.1:7480/".into(),
                bucket_prefix: prefix.into(),
                addressing,
                region: "us-east-1".into(),
                access_key: "ak".into(),
                secret_key: "sk".into(),
            },
            rt.handle().clone(),
        )
        .unwrap()
    }

    #[test]
    fn buckets_are_renamed_by_the_prefix_and_addressed_either_way() {
        let s = store("team-", Addressing::Path);
        assert_eq!(s.store_bucket("data"), "team-data");
        assert_eq!(s.clary_bucket("team-data"), Some("data"));
        assert_eq!(s.clary_bucket("other"), None);
        assert_eq!(s.clary_bucket("team-"), None);
        assert_eq!(
            s.url(Some("data"), Some("a b/c+d"), "x=1"),
            "http://127.0.0.1:7480/team-data/a%20b/c%2Bd?x=1"
        );
        assert_eq!(
            s.url(Some("data"), None, ""),
            "http://127.0.0.1:7480/team-data"
        );
        assert_eq!(s.url(None, None, ""), "http://127.0.0.1:7480/");
        let v = store("", Addressing::VirtualHost);
        assert_eq!(
            v.url(Some("data"), Some("k"), ""),
            "http://data.127.0.0.1:7480/k"
        );
        assert_eq!(
            v.url(Some("data"), None, "list-type=2"),
            "http://data.127.0.0.1:7480/?list-type=2"
        );
    }

    #[test]
    fn a_presigned_url_carries_its_signature_and_no_secret() {
        let s = store("", Addressing::Path);
        let url = s
            .presign(&http::Method::GET, &s.url(Some("b"), Some("k"), ""))
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:7480/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"));
        assert!(url.contains("X-Amz-Expires=3600"));
        assert!(url.contains("&X-Amz-Signature="));
        assert!(!url.contains("sk"));
    }

    #[test]
    fn an_endpoint_with_a_path_or_no_scheme_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for bad in ["127.0.0.1:7480", "http://h:1/base"] {
            let err = ExternalStore::new(
                ExternalStoreConfig {
                    endpoint: bad.into(),
                    bucket_prefix: String::new(),
                    addressing: Addressing::Path,
                    region: "us-east-1".into(),
                    access_key: "a".into(),
                    secret_key: "s".into(),
                },
                rt.handle().clone(),
            )
            .unwrap_err();
            assert!(err.contains("object store endpoint"), "{err}");
        }
    }
}
