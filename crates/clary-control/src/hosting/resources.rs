//! Models and endpoint configurations: create, get, list, delete.

use super::Hosting;
use crate::domain::hosting::{
    Container, EndpointConfig, ListHostingResources, Model, ProductionVariant, ResourceSummary,
};
use crate::domain::training::Page;
use crate::error::ControlError;
use crate::now_secs;
use crate::store::hosting::ResourceTable;

/// One page of `items`, already filtered and ordered.
pub(super) fn page<T>(items: Vec<T>, q: &ListHostingResources) -> Page<T> {
    let total = items.len() as u64;
    let max = u64::from(q.max_results.max(1));
    let items = items
        .into_iter()
        .skip(q.offset as usize)
        .take(max as usize)
        .collect();
    Page {
        items,
        next_offset: (total > q.offset + max).then_some(q.offset + max),
    }
}

impl Hosting {
    /// Whether Clary serves `image`; why not otherwise (the images it does serve, and how to
    /// register one).
    pub fn check_serving_image(&self, image: &str) -> Result<(), ControlError> {
        self.runtimes
            .serving_image(image)
            .map(drop)
            .map_err(ControlError::Validation)
    }

    /// `CreateModel`: its image must be one Clary serves.
    pub fn create_model(
        &self,
        name: &str,
        container: Container,
        echo: String,
    ) -> Result<String, ControlError> {
        self.check_serving_image(&container.image)?;
        let model = Model {
            name: name.to_string(),
            arn: self.arn("model", name),
            creation_time: now_secs(),
            container,
            echo,
        };
        if !self.store.insert_model(&model)? {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing model \"{}\".",
                model.arn
            )));
        }
        Ok(model.arn)
    }

    pub fn model(&self, name: &str) -> Result<Model, ControlError> {
        self.store.model(name)?.ok_or_else(|| {
            ControlError::Validation(format!(
                "Could not find model \"{}\".",
                self.arn("model", name)
            ))
        })
    }

    pub fn delete_model(&self, name: &str) -> Result<(), ControlError> {
        if !self.store.delete(ResourceTable::Models, name)? {
            self.model(name)?;
        }
        Ok(())
    }

    pub fn list_models(
        &self,
        q: &ListHostingResources,
    ) -> Result<Page<ResourceSummary>, ControlError> {
        Ok(page(self.store.list(ResourceTable::Models, q)?, q))
    }

    /// `CreateEndpointConfig`: every variant's model must exist.
    pub fn create_endpoint_config(
        &self,
        name: &str,
        variants: Vec<ProductionVariant>,
        echo: String,
    ) -> Result<String, ControlError> {
        let config = EndpointConfig {
            name: name.to_string(),
            arn: self.arn("endpoint-config", name),
            creation_time: now_secs(),
            variants,
            echo,
        };
        if self.store.config(name)?.is_some() {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing endpoint configuration \"{}\".",
                config.arn
            )));
        }
        for v in &config.variants {
            self.model(&v.model_name)?;
        }
        if !self.store.insert_config(&config)? {
            return Err(ControlError::Validation(format!(
                "Cannot create already existing endpoint configuration \"{}\".",
                config.arn
            )));
        }
        Ok(config.arn)
    }

    pub fn endpoint_config(&self, name: &str) -> Result<EndpointConfig, ControlError> {
        self.store.config(name)?.ok_or_else(|| {
            ControlError::Validation(format!(
                "Could not find endpoint configuration \"{}\".",
                self.arn("endpoint-config", name)
            ))
        })
    }

    pub fn delete_endpoint_config(&self, name: &str) -> Result<(), ControlError> {
        if !self.store.delete(ResourceTable::EndpointConfigs, name)? {
            self.endpoint_config(name)?;
        }
        Ok(())
    }

    pub fn list_endpoint_configs(
        &self,
        q: &ListHostingResources,
    ) -> Result<Page<ResourceSummary>, ControlError> {
        Ok(page(self.store.list(ResourceTable::EndpointConfigs, q)?, q))
    }
}
