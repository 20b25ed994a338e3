use super::*;

fn request() -> Value {
    json!({
        "ProcessingJobName": "prep-1",
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "AppSpecification": {
            "ImageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/prep.py"],
            "ContainerArguments": ["--rows", "10"]
        },
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 2, "InstanceType": "ml.c5.xlarge", "VolumeSizeInGB": 30
        }},
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": "s3://b/code/prep.py", "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            {"InputName": "data", "S3Input": {"S3Uri": "s3://b/data/", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix", "S3InputMode": "Pipe", "S3DataDistributionType": "ShardedByS3Key", "S3CompressionType": "Gzip"}}
        ],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/out/train", "LocalPath": "/opt/ml/processing/train", "S3UploadMode": "Continuous"}}
        ]},
        "Environment": {"MODE": "fast"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "NetworkConfig": {"EnableNetworkIsolation": false}
    })
}

#[test]
fn a_request_becomes_the_domain_spec() {
    let body = request();
    validate_create(&body, &|_| true).unwrap();
    let req: CreateProcessingJobRequest = serde_json::from_value(body).unwrap();
    let spec = req.spec().unwrap();
    assert_eq!(spec.instance_count, 2);
    assert_eq!(spec.entrypoint[0], "python3");
    assert_eq!(spec.inputs[1].input_mode, ProcessingInputMode::Pipe);
    assert!(spec.inputs[1].gzip);
    assert_eq!(spec.inputs[1].distribution, "ShardedByS3Key");
    assert_eq!(spec.outputs[0].upload_mode, UploadMode::Continuous);
    assert_eq!(spec.max_runtime_secs, 600);
    assert_eq!(spec.environment, [("MODE".to_string(), "fast".to_string())]);
}

fn refused(change: impl FnOnce(&mut Value)) -> String {
    let mut body = request();
    change(&mut body);
    match validate_create(&body, &|b| b == "b") {
        Err(e) => e.to_string(),
        Ok(()) => {
            let req: CreateProcessingJobRequest = serde_json::from_value(body).unwrap();
            req.spec().unwrap_err().to_string()
        }
    }
}

#[test]
fn what_clary_cannot_serve_or_the_model_forbids_is_refused_clearly() {
    let e = refused(|b| {
        b["ProcessingInputs"][0] =
            json!({"InputName": "q", "DatasetDefinition": {"AthenaDatasetDefinition": {}}})
    });
    assert!(
        e.contains("DatasetDefinition") && e.contains("not supported"),
        "{e}"
    );
    let e = refused(|b| b["ProcessingInputs"][1]["S3Input"]["S3InputMode"] = json!("Stream"));
    assert!(
        e.contains("processingInputs.2.s3Input.s3InputMode") && e.contains("[Pipe, File]"),
        "{e}"
    );
    let e = refused(|b| b["ProcessingInputs"][0]["S3Input"]["LocalPath"] = json!("/data"));
    assert!(e.contains("must begin with /opt/ml/processing/"), "{e}");
    let e = refused(|b| b["ProcessingInputs"][1]["S3Input"]["S3InputMode"] = json!("File"));
    assert!(e.contains("only valid with S3InputMode Pipe"), "{e}");
    let e = refused(|b| b["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = json!(0));
    assert!(e.contains("instanceCount"), "{e}");
    let e = refused(|b| b["StoppingCondition"]["MaxRuntimeInSeconds"] = json!(777_601));
    assert!(e.contains("between 1 and 777600"), "{e}");
    let e = refused(|b| {
        b["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = json!("s3://nope/x")
    });
    assert!(e.contains("does not exist"), "{e}");
    let e = refused(|b| b["Environment"] = json!({"1BAD": "x"}));
    assert!(e.contains("environment"), "{e}");
    let e = refused(|b| {
        b["AppSpecification"] = json!({"ImageUri": "img"});
    });
    assert!(e.contains("ContainerEntrypoint is required"), "{e}");
}
