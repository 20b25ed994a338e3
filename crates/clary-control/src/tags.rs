//! `AddTags`, `ListTags`, `DeleteTags` on any resource Clary keeps.

use crate::error::ControlError;
use crate::store::TagStore;

pub struct Tags {
    store: TagStore,
}

impl Tags {
    pub(crate) fn new(store: TagStore) -> Self {
        Tags { store }
    }

    fn require_resource(&self, arn: &str) -> Result<(), ControlError> {
        if self.store.resource_exists(arn)? {
            return Ok(());
        }
        Err(ControlError::Validation(format!(
            "Resource {arn} does not exist; pass the ARN of an existing training job, processing job, model, endpoint configuration or endpoint"
        )))
    }

    pub fn list(&self, arn: &str) -> Result<Vec<(String, String)>, ControlError> {
        self.require_resource(arn)?;
        self.store.list(arn)
    }

    pub fn add(
        &self,
        arn: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.require_resource(arn)?;
        self.store.add(arn, tags)?;
        self.store.list(arn)
    }

    pub fn delete(&self, arn: &str, keys: &[String]) -> Result<(), ControlError> {
        self.require_resource(arn)?;
        self.store.delete(arn, keys)
    }
}
