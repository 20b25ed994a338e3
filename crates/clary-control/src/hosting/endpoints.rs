//! Endpoints: create, update, delete, get, list. Each call changes the endpoint through the
//! domain's transitions and wakes the hosting loop, which does the rest.

use super::Hosting;
use super::resources::page;
use crate::domain::endpoint::{Deployment, Endpoint, EndpointError, EndpointStatus, Instance};
use crate::domain::hosting::{ListHostingResources, resolve_plan};
use crate::domain::training::Page;
use crate::error::ControlError;
use crate::now_secs;

/// One page of `ListEndpoints`.
pub type EndpointPage = Page<Endpoint>;

fn instance_id() -> String {
    format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
}

impl Hosting {
    fn not_found(&self, name: &str) -> ControlError {
        ControlError::Validation(format!(
            "Could not find endpoint \"{}\".",
            self.arn("endpoint", name)
        ))
    }

    pub fn endpoint(&self, name: &str) -> Result<Endpoint, ControlError> {
        self.store
            .endpoint(name)?
            .ok_or_else(|| self.not_found(name))
    }

    /// The deployment of `config_name` on `endpoint`: its plan (models resolved now) and a new
    /// instance for each one the plan asks for.
    fn deployment(&self, endpoint: &str, config_name: &str) -> Result<Deployment, ControlError> {
        let config = self.endpoint_config(config_name)?;
        let models = config
            .variants
            .iter()
            .map(|v| self.model(&v.model_name))
            .collect::<Result<Vec<_>, _>>()?;
        // Every model was found just above.
        let plan = resolve_plan(&config, |n| models.iter().find(|m| m.name == n))
            .map_err(|missing| ControlError::Internal(format!("model {missing} vanished")))?;
        let dir = self.config.data_dir.join("endpoints").join(endpoint);
        let instances = plan
            .iter()
            .flat_map(|v| {
                (0..v.count).map(|_| {
                    let id = instance_id();
                    Instance::new(id.clone(), &v.name, dir.join(&id))
                })
            })
            .collect();
        Ok(Deployment {
            config_name: config_name.to_string(),
            plan,
            instances,
        })
    }

    pub fn create_endpoint(&self, name: &str, config_name: &str) -> Result<String, ControlError> {
        let _guard = self.lock.blocking_lock();
        let arn = self.arn("endpoint", name);
        let exists = || {
            ControlError::Validation(format!(
                "Cannot create already existing endpoint \"{arn}\"."
            ))
        };
        if self.store.endpoint(name)?.is_some() {
            return Err(exists());
        }
        let live = self.deployment(name, config_name)?;
        let endpoint = Endpoint::new(name, arn.clone(), live, now_secs());
        if !self.store.insert_endpoint(&endpoint)? {
            return Err(exists());
        }
        self.wake.notify_one();
        Ok(arn)
    }

    pub fn update_endpoint(&self, name: &str, config_name: &str) -> Result<String, ControlError> {
        let _guard = self.lock.blocking_lock();
        let mut endpoint = self.endpoint(name)?;
        if endpoint.status != EndpointStatus::InService {
            // Said before the config is looked at, as SageMaker does.
            return Err(ControlError::Validation(
                EndpointError::NotInService {
                    arn: endpoint.arn,
                    status: endpoint.status.as_str(),
                }
                .to_string(),
            ));
        }
        let next = self.deployment(name, config_name)?;
        endpoint
            .begin_update(next, now_secs())
            .map_err(|e| ControlError::Validation(e.to_string()))?;
        self.store.save_endpoint(&endpoint)?;
        self.wake.notify_one();
        Ok(endpoint.arn)
    }

    pub fn delete_endpoint(&self, name: &str) -> Result<(), ControlError> {
        let _guard = self.lock.blocking_lock();
        let mut endpoint = self.endpoint(name)?;
        if endpoint.begin_delete(now_secs()) {
            self.routes.remove(name);
            self.store.save_endpoint(&endpoint)?;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// `ListEndpoints`: filtered by name, creation time and status, in the order asked for.
    pub fn list_endpoints(
        &self,
        q: &ListHostingResources,
        status: Option<EndpointStatus>,
    ) -> Result<EndpointPage, ControlError> {
        let needle = q.name_contains.as_deref().map(str::to_lowercase);
        let mut all: Vec<Endpoint> = self
            .store
            .endpoints()?
            .into_iter()
            .filter(|e| {
                needle
                    .as_deref()
                    .is_none_or(|n| e.name.to_lowercase().contains(n))
                    && q.creation_time_after.is_none_or(|t| e.creation_time > t)
                    && q.creation_time_before.is_none_or(|t| e.creation_time < t)
                    && status.is_none_or(|s| e.status == s)
            })
            .collect();
        all.sort_by(|a, b| {
            let by = if q.sort_by_name {
                a.name.cmp(&b.name)
            } else {
                a.creation_time
                    .total_cmp(&b.creation_time)
                    .then_with(|| a.name.cmp(&b.name))
            };
            if q.ascending { by } else { by.reverse() }
        });
        Ok(page(all, q))
    }
}
