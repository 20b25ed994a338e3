//! Where a host gets its objects (channels, code, checkpoints) and puts its artifacts: its
//! spec's `object_access` picks the store, and the rest of the agent sees the [`ObjectStore`]
//! trait (and the local store itself only to link File-mode channels, see
//! [`crate::input_overlay`]). Every store method blocks; call them from blocking threads.

use clary_client::SignedClient;
use clary_exec::protocol::{AGENT_API, HostSpec};
use clary_sigv4::Signer;
use clary_store::presigned::Tuning;
use clary_store::{ControlPresigner, LocalStore, ObjectStore, PresignedStore, S3HttpStore};
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
/// server's disk (`local`), the server's S3 API over HTTP when it does not (`http`: a
/// cluster node), or an external store reached directly (`presigned`). `handle` runs the
/// requests over the server's S3 API.
pub async fn for_host(spec: &HostSpec, handle: Handle) -> Result<HostStore, String> {
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
    .await
}

/// [`for_host`] for any job kind's host: `object_access` (`local`, `http` or `presigned`),
/// the local store's root, and the server's URL with the key pair for `http` and
/// `presigned`.
pub async fn for_access(
    object_access: &str,
    store_root: &Path,
    control_url: &str,
    signer: Signer,
    handle: Handle,
) -> Result<HostStore, String> {
    if object_access == "presigned" {
        return presigned(control_url, signer).await;
    }
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

/// An external store, reached directly with URLs the server at `control_url` presigns for
/// each request with the store's keys (this host's key only asks). The server is asked where
/// the store is now, so a server that cannot presign fails the host before any work.
async fn presigned(control_url: &str, signer: Signer) -> Result<HostStore, String> {
    let presigner = ControlPresigner::new(SignedClient::new(control_url, signer), AGENT_API);
    let store = PresignedStore::new(Arc::new(presigner), Tuning::from_env())?;
    let endpoint = store.endpoint().await.map_err(|e| e.to_string())?;
    let how = format!(
        "Objects come directly from the object store at {endpoint}, with URLs the server at {control_url} presigns (the data does not pass through the server)"
    );
    Ok(HostStore {
        objects: Arc::new(store),
        local: None,
        how,
    })
}
