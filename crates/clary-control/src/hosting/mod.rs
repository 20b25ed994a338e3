//! Hosting: models, endpoint configurations and endpoints. The API's calls change typed
//! entities ([`resources`], [`endpoints`]); the hosting loop ([`reconciler`]) observes each
//! endpoint's instances, lets the domain's pure reconciler decide, and carries out what it
//! decided through the executor ([`instances`]): launches, signals, routes and log shipping.

mod endpoints;
mod instances;
pub use instances::{InstanceStats, probe};
mod reconciler;
mod resources;

pub use endpoints::EndpointPage;

use crate::config::ControlConfig;
use crate::credentials::Credentials;
use crate::domain::hosting::{Container, ProductionVariant};
use crate::error::ControlError;
use crate::logs::Logs;
use crate::routes::Routes;
use crate::store::hosting::{HostingStore, ResourceTable};
use clary_exec::Executor;
use clary_exec::runtimes::Runtimes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub struct Hosting {
    store: HostingStore,
    logs: Logs,
    executor: Arc<dyn Executor>,
    config: Arc<ControlConfig>,
    runtimes: Runtimes,
    routes: Arc<Routes>,
    /// Addresses and ports model servers on cluster nodes reported, by instance id, until the
    /// hosting loop takes them.
    reports: Mutex<HashMap<String, (String, u16)>>,
    wake: Notify,
    /// Held by the hosting loop during a pass and by calls that change an endpoint, so neither
    /// overwrites the other's change.
    lock: tokio::sync::Mutex<()>,
    credentials: Arc<Credentials>,
}

impl Hosting {
    pub(crate) fn new(
        store: HostingStore,
        logs: Logs,
        executor: Arc<dyn Executor>,
        config: Arc<ControlConfig>,
        routes: Arc<Routes>,
        credentials: Arc<Credentials>,
    ) -> Self {
        Hosting {
            store,
            logs,
            executor,
            runtimes: Runtimes::new(config.runtimes_dir.clone()),
            config,
            routes,
            reports: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            lock: tokio::sync::Mutex::new(()),
            credentials,
        }
    }

    /// Whether `instance` is (still) one of `endpoint`'s, so its scoped key signs.
    pub fn has_instance(&self, endpoint: &str, instance: &str) -> bool {
        self.store
            .endpoint(endpoint)
            .ok()
            .flatten()
            .is_some_and(|e| e.instances().any(|i| i.id == instance))
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        self.config.arn(kind, name)
    }

    /// Fills in the typed specs of models and configs an earlier Clary stored with only their
    /// request, decoding each with the API's decoders. Returns the ones that could not be
    /// decoded (they stay, and an endpoint deployed from them fails with the reason).
    pub fn fill_in_specs(
        &self,
        model: impl Fn(&str) -> Result<Container, String>,
        config: impl Fn(&str) -> Result<Vec<ProductionVariant>, String>,
    ) -> Result<Vec<String>, ControlError> {
        let mut undecodable = Vec::new();
        for (name, request) in self.store.without_spec(ResourceTable::Models)? {
            match model(&request) {
                Ok(c) => self.store.set_model_spec(&name, &c)?,
                Err(e) => undecodable.push(format!("model {name}: {e}")),
            }
        }
        for (name, request) in self.store.without_spec(ResourceTable::EndpointConfigs)? {
            match config(&request) {
                Ok(v) => self.store.set_config_spec(&name, &v)?,
                Err(e) => undecodable.push(format!("endpoint configuration {name}: {e}")),
            }
        }
        Ok(undecodable)
    }
}
