//! Where a host gets its objects (channels, code, checkpoints) and puts its artifacts: its
//! spec's `object_access` picks the store, and the rest of the agent sees the [`ObjectStore`]
//! trait (and the local store itself only to link File-mode channels, see
//! [`crate::input_overlay`]). Every store method blocks; call them from blocking threads.

use clary_client::SignedClient;
use clary_exec::protocol::HostSpec;
use clary_sigv4::Signer;
use clary_store::{LocalStore, ObjectStore, S3HttpStore};
use std::path::Path;
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
    for_access(
        &spec.object_access,
        &spec.store_root,
        &spec.control_url,
        Signer {
            access_key: spec.access_key.clone(),
            secret_key: spec.secret_key.clone(),
            region: spec.region.clone(),
        },
        handle,
    )
}

/// [`for_host`] for any job kind's host: `object_access` (`local` or `http`), the local
/// store's root, and the server's URL with the key pair for `http`.
pub fn for_access(
    object_access: &str,
    store_root: &Path,
    control_url: &str,
    signer: Signer,
    handle: Handle,
) -> Result<HostStore, String> {
    if object_access == "http" {
        let store = S3HttpStore::new(SignedClient::new(control_url, signer), handle);
        let how = format!(
            "Objects travel over the S3 API at {control_url} (this host does not share the store's disk)"
        );
        return Ok(HostStore {
            objects: Arc::new(store),
            local: None,
            how,
        });
    }
    let root = store_root;
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
