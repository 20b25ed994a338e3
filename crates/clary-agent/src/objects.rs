//! Where a host gets its objects (channels, code, checkpoints) and puts its artifacts: its
//! spec's `object_access` picks the store, and the rest of the agent sees the [`ObjectStore`]
//! trait (and the local store itself only to link File-mode channels, see
//! [`crate::input_overlay`]). Every store method blocks; call them from blocking threads.

use clary_client::SignedClient;
use clary_exec::protocol::HostSpec;
use clary_sigv4::Signer;
use clary_store::{LocalStore, ObjectStore, S3HttpStore};
use std::sync::Arc;
use tokio::runtime::Handle;

/// The host's object store, shared by the stages, the Pipe feeders and the checkpoint sync.
pub type Objects = Arc<dyn ObjectStore>;

/// A host's store: the objects, the local store itself when the host shares its disk (so
/// channels may be linked from it, see [`crate::input_overlay`]), and a line for the job's
/// log saying which it is.
pub struct HostStore {
    pub objects: Objects,
    pub local: Option<Arc<LocalStore>>,
    pub how: String,
}

/// The store `spec` asks for: the embedded store's directory when the host shares the
/// server's disk (`local`), or the server's S3 API over HTTP when it does not (`http`: a
/// cluster node). `handle` runs the HTTP requests.
pub fn for_host(spec: &HostSpec, handle: Handle) -> Result<HostStore, String> {
    open(
        &Access {
            object_access: &spec.object_access,
            store_root: &spec.store_root,
            control_url: &spec.control_url,
            access_key: &spec.access_key,
            secret_key: &spec.secret_key,
            region: &spec.region,
        },
        handle,
    )
}

/// How a host reaches objects (the fields every host spec carries).
pub struct Access<'a> {
    pub object_access: &'a str,
    pub store_root: &'a std::path::Path,
    pub control_url: &'a str,
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
}

/// The store `access` asks for (see [`for_host`]).
pub fn open(access: &Access<'_>, handle: Handle) -> Result<HostStore, String> {
    if access.object_access == "http" {
        let signer = Signer {
            access_key: access.access_key.to_string(),
            secret_key: access.secret_key.to_string(),
            region: access.region.to_string(),
        };
        let store = S3HttpStore::new(SignedClient::new(access.control_url, signer), handle);
        let how = format!(
            "Objects travel over the S3 API at {} (this host does not share the store's disk)",
            access.control_url
        );
        return Ok(HostStore {
            objects: Arc::new(store),
            local: None,
            how,
        });
    }
    let root = access.store_root;
    let store = Arc::new(
        LocalStore::open(root)
            .map_err(|e| format!("opening the object store at {}: {e}", root.display()))?,
    );
    let how = format!("Objects come from the store at {}", root.display());
    Ok(HostStore {
        objects: store.clone(),
        local: Some(store),
        how,
    })
}
