//! Models and endpoint configurations: what an endpoint is deployed from. A deployment
//! resolves each variant's model once ([`resolve_plan`]), so a model or config deleted later
//! does not disturb a running endpoint, as on SageMaker.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The inference container of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub image: String,
    /// `s3://bucket/key` of the model's `model.tar.gz`, when it has one.
    pub model_data_url: Option<String>,
    pub environment: BTreeMap<String, String>,
}

/// A model (`CreateModel`).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub arn: String,
    pub creation_time: f64,
    pub container: Container,
    /// The request as the edge received it, for the edge to echo back; the domain never reads it.
    pub echo: String,
}

/// One production variant of an endpoint configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductionVariant {
    pub name: String,
    pub model_name: String,
    pub instance_type: String,
    pub instance_count: u32,
    pub weight: f64,
    pub accelerator_type: Option<String>,
}

/// An endpoint configuration (`CreateEndpointConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub arn: String,
    pub creation_time: f64,
    pub variants: Vec<ProductionVariant>,
    /// The request as the edge received it, for the edge to echo back.
    pub echo: String,
}

/// One variant of a deployment, with its model resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantPlan {
    pub name: String,
    pub weight: f64,
    pub count: u32,
    pub instance_type: String,
    pub accelerator_type: Option<String>,
    pub model_name: String,
    pub image: String,
    pub model_data_url: Option<String>,
    pub environment: BTreeMap<String, String>,
}

/// The variants of `config` with each one's model resolved by `model`; the name of the first
/// model that does not exist otherwise.
pub fn resolve_plan<'m>(
    config: &EndpointConfig,
    model: impl Fn(&str) -> Option<&'m Model>,
) -> Result<Vec<VariantPlan>, String> {
    config
        .variants
        .iter()
        .map(|v| {
            let m = model(&v.model_name).ok_or_else(|| v.model_name.clone())?;
            Ok(VariantPlan {
                name: v.name.clone(),
                weight: v.weight,
                count: v.instance_count.max(1),
                instance_type: v.instance_type.clone(),
                accelerator_type: v.accelerator_type.clone(),
                model_name: v.model_name.clone(),
                image: m.container.image.clone(),
                model_data_url: m.container.model_data_url.clone(),
                environment: m.container.environment.clone(),
            })
        })
        .collect()
}

/// Filters and order of `ListModels`, `ListEndpointConfigs` and `ListEndpoints`.
#[derive(Debug, Default, Clone)]
pub struct ListHostingResources {
    pub name_contains: Option<String>,
    pub creation_time_after: Option<f64>,
    pub creation_time_before: Option<f64>,
    /// By name; by creation time otherwise.
    pub sort_by_name: bool,
    pub ascending: bool,
    pub max_results: u32,
    /// Items to skip (the decoded `NextToken`).
    pub offset: u64,
}

/// A resource as listings show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSummary {
    pub name: String,
    pub arn: String,
    pub creation_time: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, image: &str) -> Model {
        Model {
            name: name.into(),
            arn: format!("arn:{name}"),
            creation_time: 1.0,
            container: Container {
                image: image.into(),
                model_data_url: Some(format!("s3://b/{name}.tar.gz")),
                environment: [("K".to_string(), "V".to_string())].into(),
            },
            echo: String::new(),
        }
    }

    fn variant(name: &str, model: &str, count: u32) -> ProductionVariant {
        ProductionVariant {
            name: name.into(),
            model_name: model.into(),
            instance_type: "ml.m5.large".into(),
            instance_count: count,
            weight: 1.0,
            accelerator_type: None,
        }
    }

    #[test]
    fn a_plan_resolves_each_variants_model() {
        let models = [model("a", "img-a"), model("b", "img-b")];
        let config = EndpointConfig {
            name: "c".into(),
            arn: "arn:c".into(),
            creation_time: 1.0,
            variants: vec![variant("v1", "a", 2), variant("v2", "b", 1)],
            echo: String::new(),
        };
        let plan = resolve_plan(&config, |n| models.iter().find(|m| m.name == n)).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].image, "img-a");
        assert_eq!(plan[0].count, 2);
        assert_eq!(plan[1].model_data_url.as_deref(), Some("s3://b/b.tar.gz"));
        assert_eq!(plan[1].environment["K"], "V");
    }

    #[test]
    fn a_plan_names_the_missing_model() {
        let models = [model("a", "img-a")];
        let config = EndpointConfig {
            name: "c".into(),
            arn: "arn:c".into(),
            creation_time: 1.0,
            variants: vec![variant("v1", "a", 1), variant("v2", "gone", 1)],
            echo: String::new(),
        };
        let err = resolve_plan(&config, |n| models.iter().find(|m| m.name == n)).unwrap_err();
        assert_eq!(err, "gone");
    }
}
