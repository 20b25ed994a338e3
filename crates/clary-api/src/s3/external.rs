//! The S3 API over an external S3 store: each operation Clary's clients make is checked and
//! signed here, then made on the store with the server's key pair for it, streaming bodies
//! both ways.

use clary_store::ExternalStore;
use s3s::S3;
use std::sync::Arc;

pub struct S3External {
    pub store: Arc<ExternalStore>,
}

#[async_trait::async_trait]
impl S3 for S3External {}
