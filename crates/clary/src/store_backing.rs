//! Where `clary server` keeps buckets and objects: the local directory under the data dir
//! (the default), or an external S3 store named by `--object-store s3://BUCKET_PREFIX`.

use anyhow::{Context, Result, bail};
use clary_api::Backing;
use clary_store::{Addressing, ExternalStore, ExternalStoreConfig, LocalStore};
use std::path::Path;

#[derive(clap::Args, Debug, Clone)]
pub struct ObjectStoreArgs {
    /// Where buckets and objects live: `local` (a directory under the data dir), or
    /// `s3://BUCKET_PREFIX`, an external S3 store in which Clary's bucket `b` is the store's
    /// bucket `BUCKET_PREFIX` + `b` (`s3://` alone: the same names).
    #[arg(long, env = "CLARY_OBJECT_STORE", default_value = "local")]
    pub object_store: String,
    /// The external store's URL, `scheme://host:port` [default: AWS S3 in its region].
    #[arg(long, env = "CLARY_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,
    /// The region requests to the external store are signed for [default: the server's].
    #[arg(long, env = "CLARY_OBJECT_STORE_REGION")]
    pub object_store_region: Option<String>,
    /// How the external store's buckets are addressed: `path` (`host/bucket/key`: Ceph RGW,
    /// MinIO, Garage) or `virtual` (`bucket.host/key`) [default: path with an endpoint,
    /// virtual for AWS S3].
    #[arg(long, env = "CLARY_OBJECT_STORE_ADDRESSING", value_parser = ["path", "virtual"])]
    pub object_store_addressing: Option<String>,
    /// The external store's access key [default: $AWS_ACCESS_KEY_ID].
    #[arg(long, env = "CLARY_OBJECT_STORE_ACCESS_KEY")]
    pub object_store_access_key: Option<String>,
    /// The external store's secret key [default: $AWS_SECRET_ACCESS_KEY].
    #[arg(long, env = "CLARY_OBJECT_STORE_SECRET_KEY", hide_env_values = true)]
    pub object_store_secret_key: Option<String>,
}

/// The external store the arguments name, or `None` for the local directory.
pub fn external_config(
    args: &ObjectStoreArgs,
    region: &str,
) -> Result<Option<ExternalStoreConfig>> {
    if args.object_store == "local" {
        return Ok(None);
    }
    // `s3://prefix/` means the same as `s3://prefix`.
    let Some(bucket_prefix) = args
        .object_store
        .strip_prefix("s3://")
        .map(|p| p.trim_end_matches('/'))
    else {
        bail!(
            "--object-store {:?} is neither `local` nor `s3://BUCKET_PREFIX`",
            args.object_store
        );
    };
    if bucket_prefix.contains('/') {
        bail!(
            "--object-store {:?}: give a prefix of bucket names (s3://clary- makes Clary's bucket b the store's bucket clary-b), not a path inside a bucket",
            args.object_store
        );
    }
    if !bucket_prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        bail!(
            "--object-store {:?}: a bucket prefix has lower-case letters, digits, '-' and '.' only",
            args.object_store
        );
    }
    let region = args
        .object_store_region
        .clone()
        .unwrap_or_else(|| region.to_string());
    let endpoint = args
        .object_store_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let addressing = match args.object_store_addressing.as_deref() {
        Some("virtual") => Addressing::VirtualHost,
        Some(_) => Addressing::Path,
        None if args.object_store_endpoint.is_some() => Addressing::Path,
        None => Addressing::VirtualHost,
    };
    let from_env = |flag: &Option<String>, var: &str| {
        flag.clone()
            .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
    };
    let (Some(access_key), Some(secret_key)) = (
        from_env(&args.object_store_access_key, "AWS_ACCESS_KEY_ID"),
        from_env(&args.object_store_secret_key, "AWS_SECRET_ACCESS_KEY"),
    ) else {
        bail!(
            "--object-store {} needs the store's key pair: --object-store-access-key and --object-store-secret-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            args.object_store
        );
    };
    Ok(Some(ExternalStoreConfig {
        endpoint,
        bucket_prefix: bucket_prefix.to_string(),
        addressing,
        region,
        access_key,
        secret_key,
    }))
}

/// Opens the store the arguments name and makes sure the default bucket is in it. An
/// external store that cannot be reached stops the server here, saying which.
pub async fn open(
    args: &ObjectStoreArgs,
    data_dir: &Path,
    region: &str,
    default_bucket: &str,
) -> Result<Backing> {
    let Some(config) = external_config(args, region)? else {
        let store =
            LocalStore::open(data_dir.join("objects")).map_err(|e| anyhow::anyhow!("{e}"))?;
        if store.head_bucket(default_bucket).is_err() {
            store
                .create_bucket(default_bucket)
                .map_err(|e| anyhow::anyhow!("creating the default bucket: {e}"))?;
        }
        return Ok(Backing::Local(store));
    };
    let store = ExternalStore::new(config, tokio::runtime::Handle::current())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.ensure_bucket(default_bucket).await.with_context(|| {
        format!(
            "creating the default bucket {} in {}",
            store.store_bucket(default_bucket),
            store.describe()
        )
    })?;
    Ok(Backing::External(std::sync::Arc::new(store)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(store: &str, endpoint: Option<&str>) -> ObjectStoreArgs {
        ObjectStoreArgs {
            object_store: store.into(),
            object_store_endpoint: endpoint.map(str::to_string),
            object_store_region: None,
            object_store_addressing: None,
            object_store_access_key: Some("ak".into()),
            object_store_secret_key: Some("sk".into()),
        }
    }

    #[test]
    fn the_flags_name_a_prefix_an_endpoint_and_an_addressing() {
        assert!(
            external_config(&args("local", None), "us-east-1")
                .unwrap()
                .is_none()
        );
        let c = external_config(&args("s3://team-a-/", Some("http://h:7480")), "eu-west-1")
            .unwrap()
            .unwrap();
        assert_eq!(c.bucket_prefix, "team-a-");
        assert_eq!(c.addressing, Addressing::Path);
        assert_eq!(c.region, "eu-west-1");
        let aws = external_config(&args("s3://", None), "us-west-2")
            .unwrap()
            .unwrap();
        assert_eq!(aws.endpoint, "https://s3.us-west-2.amazonaws.com");
        assert_eq!(aws.addressing, Addressing::VirtualHost);
        assert_eq!(aws.bucket_prefix, "");
    }

    #[test]
    fn a_path_or_a_bad_scheme_or_missing_keys_are_refused_with_what_to_do() {
        for (store, want) in [
            ("s3://bucket/inside", "not a path inside a bucket"),
            ("gs://x", "neither `local` nor `s3://BUCKET_PREFIX`"),
            ("s3://Upper", "lower-case letters"),
        ] {
            let err = external_config(&args(store, Some("http://h:1")), "us-east-1")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{store}: {err}");
        }
        let mut no_keys = args("s3://p-", Some("http://h:1"));
        no_keys.object_store_access_key = None;
        no_keys.object_store_secret_key = None;
        // The test's own environment may carry AWS keys; only check the message when not.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            let err = external_config(&no_keys, "us-east-1")
                .unwrap_err()
                .to_string();
            assert!(err.contains("--object-store-access-key"), "{err}");
        }
    }
}
