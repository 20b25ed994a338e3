//! Clary's SageMaker surface checked against the botocore service model it follows
//! (`botocore/sagemaker-subset.json`, vendored by `scripts/vendor-botocore.py`): operations,
//! enums, name constraints and limits. A botocore upgrade that changes one fails here.

use crate::validate::{channel_name, resource_name};
use clary_control::domain::endpoint::EndpointStatus;
use clary_control::domain::job::{JobStatus, SecondaryStatus};
use clary_control::domain::training::InputMode;
use serde_json::Value;
use std::collections::BTreeSet;

fn model() -> Value {
    serde_json::from_str(include_str!("../botocore/sagemaker-subset.json"))
        .expect("the vendored model is JSON")
}

fn shape(name: &str) -> Value {
    model()["shapes"][name].clone()
}

fn enum_of(name: &str) -> BTreeSet<String> {
    shape(name)["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is an enum in the model"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn set(items: impl IntoIterator<Item = &'static str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_string).collect()
}

#[test]
fn the_served_operations_are_the_vendored_ones() {
    let vendored: BTreeSet<String> = model()["operations"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        vendored,
        set(crate::sagemaker_api::SERVED_OPERATIONS.iter().copied())
    );
    assert_eq!(model()["metadata"]["targetPrefix"], "SageMaker");
}

#[test]
fn job_statuses_are_the_models() {
    let domain = set(JobStatus::ALL.map(JobStatus::as_str));
    let model = enum_of("TrainingJobStatus");
    assert!(domain.is_subset(&model), "{domain:?} vs {model:?}");
    // The one a training job of Clary's never reaches; ListTrainingJobs answers it with none.
    assert_eq!(model.difference(&domain).collect::<Vec<_>>(), ["Deleting"]);
}

#[test]
fn secondary_statuses_are_the_models() {
    let domain = set(SecondaryStatus::ALL.map(SecondaryStatus::as_str));
    assert!(domain.is_subset(&enum_of("SecondaryStatus")), "{domain:?}");
}

#[test]
fn endpoint_statuses_are_the_models() {
    let model = enum_of("EndpointStatus");
    assert_eq!(
        set(crate::hosting_api::ENDPOINT_STATUSES.iter().copied()),
        model
    );
    let domain = set(EndpointStatus::ALL.map(EndpointStatus::as_str));
    assert!(domain.is_subset(&model), "{domain:?}");
}

#[test]
fn input_modes_are_the_models() {
    let domain =
        set([InputMode::File, InputMode::Pipe, InputMode::FastFile].map(InputMode::as_str));
    assert_eq!(domain, enum_of("TrainingInputMode"));
}

#[test]
fn names_follow_the_models_length_limits() {
    for name in [
        "TrainingJobName",
        "EndpointName",
        "EndpointConfigName",
        "ModelName",
    ] {
        let max = shape(name)["max"].as_u64().unwrap() as usize;
        assert_eq!(max, 63, "{name}");
        assert!(resource_name(&"a".repeat(max), "x").is_ok(), "{name}");
        assert!(resource_name(&"a".repeat(max + 1), "x").is_err(), "{name}");
    }
    let channel = shape("ChannelName");
    let max = channel["max"].as_u64().unwrap() as usize;
    assert_eq!(channel["pattern"], r"[A-Za-z0-9\.\-_]+");
    assert!(channel_name(&"a".repeat(max), "x").is_ok());
    assert!(channel_name(&"a".repeat(max + 1), "x").is_err());
    assert!(
        channel_name("a b", "x").is_err(),
        "outside the model's pattern"
    );
}

#[test]
fn page_sizes_follow_the_model() {
    let max_results = shape("MaxResults");
    assert_eq!(max_results["min"], 1);
    let max = max_results["max"].as_i64().unwrap();
    let body = |n: i64| serde_json::json!({ "MaxResults": n });
    assert!(crate::validate::page_size(&body(max), "MaxResults", "maxResults", 100).is_ok());
    assert!(crate::validate::page_size(&body(max + 1), "MaxResults", "maxResults", 100).is_err());
    assert!(crate::validate::page_size(&body(0), "MaxResults", "maxResults", 100).is_err());
}

#[test]
fn tuning_statuses_and_strategies_are_the_models() {
    use clary_control::domain::tuning_job::TuningStatus;
    let domain = set(TuningStatus::ALL.map(TuningStatus::as_str));
    assert!(
        domain.is_subset(&enum_of("HyperParameterTuningJobStatus")),
        "{domain:?}"
    );
    assert_eq!(
        enum_of("HyperParameterTuningJobStrategyType"),
        set(["Bayesian", "Random", "Hyperband", "Grid"])
    );
    assert_eq!(
        enum_of("TrainingJobEarlyStoppingType"),
        set(["Off", "Auto"])
    );
}

#[test]
fn processing_enums_and_limits_are_the_models() {
    // A processing job's status is the shared job status, all five of the model's.
    assert_eq!(
        set(JobStatus::ALL.map(JobStatus::as_str)),
        enum_of("ProcessingJobStatus")
    );
    use clary_control::domain::processing::ProcessingInputMode;
    assert_eq!(
        set([ProcessingInputMode::File, ProcessingInputMode::Pipe].map(ProcessingInputMode::as_str)),
        enum_of("ProcessingS3InputMode")
    );
    assert_eq!(
        enum_of("ProcessingS3UploadMode"),
        set(["Continuous", "EndOfJob"])
    );
    assert_eq!(
        enum_of("ProcessingS3DataDistributionType"),
        set(["FullyReplicated", "ShardedByS3Key"])
    );
    assert_eq!(
        enum_of("ProcessingS3DataType"),
        set(["ManifestFile", "S3Prefix"])
    );
    assert_eq!(
        enum_of("ProcessingS3CompressionType"),
        set(["None", "Gzip"])
    );
    assert_eq!(shape("ProcessingJobName")["max"], 63);
    assert_eq!(shape("ProcessingMaxRuntimeInSeconds")["max"], 777_600);
    assert_eq!(shape("ProcessingInstanceCount")["max"], 100);
    assert_eq!(shape("ProcessingInputs")["max"], 10);
    assert_eq!(shape("ProcessingOutputs")["max"], 10);
    assert_eq!(shape("ContainerEntrypoint")["max"], 100);
    assert_eq!(shape("ProcessingEnvironmentMap")["max"], 100);
    assert_eq!(
        shape("ProcessingEnvironmentKey")["pattern"],
        "[a-zA-Z_][a-zA-Z0-9_]*"
    );
    assert_eq!(shape("ExitMessage")["max"], 1024);
    // The members Describe answers are the model's.
    let described = shape("DescribeProcessingJobResponse");
    for member in [
        "ProcessingJobName",
        "ProcessingJobArn",
        "ProcessingJobStatus",
        "ProcessingInputs",
        "ProcessingOutputConfig",
        "ProcessingResources",
        "StoppingCondition",
        "AppSpecification",
        "Environment",
        "NetworkConfig",
        "RoleArn",
        "ExperimentConfig",
        "ExitMessage",
        "FailureReason",
        "ProcessingStartTime",
        "ProcessingEndTime",
        "LastModifiedTime",
        "CreationTime",
    ] {
        assert!(described["members"].get(member).is_some(), "{member}");
    }
}

#[test]
fn transform_enums_are_the_models() {
    use clary_control::domain::transform::{BatchStrategy, SplitType};
    assert_eq!(
        set(crate::transform_api::TRANSFORM_JOB_STATUSES.iter().copied()),
        enum_of("TransformJobStatus")
    );
    assert_eq!(
        set(crate::job_list::TRAINING_JOB_STATUSES.iter().copied()),
        enum_of("TrainingJobStatus")
    );
    assert_eq!(
        set(crate::job_list::PROCESSING_JOB_STATUSES.iter().copied()),
        enum_of("ProcessingJobStatus")
    );
    let domain = set(JobStatus::ALL.map(JobStatus::as_str));
    assert_eq!(domain, enum_of("TransformJobStatus"));
    assert_eq!(
        set([BatchStrategy::MultiRecord, BatchStrategy::SingleRecord].map(BatchStrategy::as_str)),
        enum_of("BatchStrategy")
    );
    // TFRecord is refused with a message saying what works (MXNet reads RecordIO).
    let splits =
        set([SplitType::None, SplitType::Line, SplitType::RecordIO].map(SplitType::as_str));
    assert_eq!(
        enum_of("SplitType").difference(&splits).collect::<Vec<_>>(),
        ["TFRecord"]
    );
    assert_eq!(enum_of("CompressionType"), set(["None", "Gzip"]));
    assert_eq!(enum_of("AssemblyType"), set(["None", "Line"]));
    assert_eq!(enum_of("JoinSource"), set(["Input", "None"]));
    // AugmentedManifestFile and Converse are refused for transform.
    assert!(enum_of("S3DataType").is_superset(&set(["S3Prefix", "ManifestFile"])));
}

#[test]
fn transform_limits_are_the_models() {
    use clary_control::domain::transform::{
        DEFAULT_INVOCATIONS_MAX_RETRIES, DEFAULT_INVOCATIONS_TIMEOUT_SECS,
    };
    let timeout = shape("InvocationsTimeoutInSeconds");
    assert_eq!(
        (timeout["min"].as_u64(), timeout["max"].as_u64()),
        (Some(1), Some(3600))
    );
    assert!(DEFAULT_INVOCATIONS_TIMEOUT_SECS <= timeout["max"].as_u64().unwrap());
    let retries = shape("InvocationsMaxRetries");
    assert_eq!(
        (retries["min"].as_u64(), retries["max"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(u64::from(DEFAULT_INVOCATIONS_MAX_RETRIES) <= retries["max"].as_u64().unwrap());
    assert_eq!(shape("MaxPayloadInMB")["min"], 0);
    assert_eq!(shape("MaxConcurrentTransforms")["min"], 0);
    assert_eq!(shape("JsonPath")["max"], 63);
    assert_eq!(shape("TransformEnvironmentMap")["max"], 16);
    assert_eq!(shape("TransformInstanceCount")["min"], 1);
    let name = shape("TransformJobName");
    assert_eq!(name["max"], 63);
    assert!(resource_name(&"a".repeat(63), "x").is_ok());
    assert!(resource_name(&"a".repeat(64), "x").is_err());
    // Every request member the API reads is one the model has.
    let members = shape("CreateTransformJobRequest")["members"].clone();
    for field in [
        "TransformJobName",
        "ModelName",
        "MaxConcurrentTransforms",
        "ModelClientConfig",
        "MaxPayloadInMB",
        "BatchStrategy",
        "Environment",
        "TransformInput",
        "TransformOutput",
        "DataCaptureConfig",
        "TransformResources",
        "DataProcessing",
        "Tags",
    ] {
        assert!(members.get(field).is_some(), "{field}");
    }
    // And every member of the answer Clary gives is the model's.
    let describe = shape("DescribeTransformJobResponse")["members"].clone();
    for field in [
        "TransformJobName",
        "TransformJobArn",
        "TransformJobStatus",
        "FailureReason",
        "ModelName",
        "MaxConcurrentTransforms",
        "ModelClientConfig",
        "MaxPayloadInMB",
        "BatchStrategy",
        "Environment",
        "TransformInput",
        "TransformOutput",
        "DataCaptureConfig",
        "TransformResources",
        "CreationTime",
        "TransformStartTime",
        "TransformEndTime",
        "DataProcessing",
        "ExperimentConfig",
    ] {
        assert!(describe.get(field).is_some(), "{field}");
    }
}
