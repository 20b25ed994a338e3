//! Request validation for `CreateTrainingJob`, following the botocore service model's
//! constraints, with AWS's message shape ("1 validation error detected: Value ... at ...").

use clary_control::ControlError;
use serde_json::Value;

pub(crate) fn fail(value: &str, at: &str, constraint: &str) -> ControlError {
    let shown: String = value.chars().take(100).collect();
    ControlError::Validation(format!(
        "1 validation error detected: Value '{shown}' at '{at}' failed to satisfy constraint: {constraint}"
    ))
}

pub(crate) fn need<'a>(v: &'a Value, field: &str, at: &str) -> Result<&'a Value, ControlError> {
    match v.get(field) {
        Some(x) if !x.is_null() => Ok(x),
        _ => Err(fail("null", at, "Member must not be null")),
    }
}

pub(crate) fn string<'a>(v: &'a Value, at: &str) -> Result<&'a str, ControlError> {
    v.as_str()
        .ok_or_else(|| fail(&v.to_string(), at, "Member must be a string"))
}

/// `[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`, 1 to 63 characters.
pub fn resource_name(name: &str, at: &str) -> Result<(), ControlError> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(fail(
            name,
            at,
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} and have length between 1 and 63",
        ))
    }
}

/// `[A-Za-z0-9\.\-_]+`, 1 to 64 characters, and not `.` or `..`: a channel's name is a
/// directory under `input/data`, and those two would name the directory itself or its parent
/// (where `input/config/resourceconfig.json` lives).
pub fn channel_name(name: &str, at: &str) -> Result<(), ControlError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(fail(
            name,
            at,
            "Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+ and have length between 1 and 64",
        ));
    }
    if name == "." || name == ".." {
        return Err(fail(
            name,
            at,
            "Member must not be '.' or '..', which name a directory and not a channel",
        ));
    }
    Ok(())
}

/// `AlgorithmSpecification.MetricDefinitions`: at most 40, each a `Name` (1 to 255
/// characters) and a `Regex` (1 to 500) that compiles.
/// `ContainerEntrypoint` or `ContainerArguments`: 1 to 100 strings of at most 256 characters.
fn container_strings(list: &Value, at: &str) -> Result<(), ControlError> {
    let items = list
        .as_array()
        .ok_or_else(|| fail(&list.to_string(), at, "Member must be a list of strings"))?;
    if !(1..=100).contains(&items.len()) {
        return Err(fail(
            &format!("{} entries", items.len()),
            at,
            "Member must have length between 1 and 100",
        ));
    }
    for item in items {
        let s = string(item, &format!("{at}.member"))?;
        if s.chars().count() > 256 {
            return Err(fail(
                s,
                &format!("{at}.member"),
                "Member must have length less than or equal to 256",
            ));
        }
    }
    Ok(())
}

fn metric_definitions(defs: &Value) -> Result<(), ControlError> {
    const AT: &str = "algorithmSpecification.metricDefinitions";
    let list = defs
        .as_array()
        .ok_or_else(|| fail(&defs.to_string(), AT, "Member must be a list"))?;
    if list.len() > 40 {
        return Err(fail(
            &format!("{} definitions", list.len()),
            AT,
            "Member must have length less than or equal to 40",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, d) in list.iter().enumerate() {
        let at = format!("{AT}.{}.member", i + 1);
        let name = string(
            need(d, "Name", &format!("{at}.name"))?,
            &format!("{at}.name"),
        )?;
        let regex = string(
            need(d, "Regex", &format!("{at}.regex"))?,
            &format!("{at}.regex"),
        )?;
        if !(1..=255).contains(&name.chars().count()) {
            return Err(fail(
                name,
                &format!("{at}.name"),
                "Member must have length between 1 and 255",
            ));
        }
        if !(1..=500).contains(&regex.chars().count()) {
            return Err(fail(
                regex,
                &format!("{at}.regex"),
                "Member must have length between 1 and 500",
            ));
        }
        if !names.insert(name) {
            return Err(ControlError::Validation(format!(
                "Metric name {name} is defined more than once in MetricDefinitions; give each metric its own name"
            )));
        }
        if let Err(e) = regex_lite::Regex::new(regex) {
            return Err(ControlError::Validation(format!(
                "The regex {regex:?} of metric {name} is not a valid regular expression: {e}"
            )));
        }
    }
    Ok(())
}

/// A page size (`MaxResults`, Logs' `limit`): `None` when absent, else within `1..=max` or
/// AWS's ValidationException (boto3 with parameter validation off, and the AWS CLI's
/// `--max-items`, send `-1` as is).
pub fn page_size(
    body: &Value,
    field: &str,
    at: &str,
    max: i64,
) -> Result<Option<i64>, ControlError> {
    let Some(v) = body.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.as_i64() {
        Some(n) if n < 1 => Err(fail(
            &n.to_string(),
            at,
            "Member must have value greater than or equal to 1",
        )),
        Some(n) if n > max => Err(fail(
            &n.to_string(),
            at,
            &format!("Member must have value less than or equal to {max}"),
        )),
        Some(n) => Ok(Some(n)),
        None => Err(fail(&v.to_string(), at, "Member must be an integer")),
    }
}

pub(crate) fn role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let Some((_, rest)) = rest.split_once(":iam::") else {
        return false;
    };
    let Some((account, role)) = rest.split_once(":role") else {
        return false;
    };
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && role.len() > 1
        && (20..=2048).contains(&arn.len())
}

pub(crate) fn one_of(value: &str, allowed: &[&str], at: &str) -> Result<(), ControlError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(fail(
            value,
            at,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        ))
    }
}

/// Validates the request; `bucket_exists` checks the S3 buckets it names.
pub fn create_training_job(
    req: &Value,
    bucket_exists: &dyn Fn(&str) -> bool,
) -> Result<(), ControlError> {
    let name = string(
        need(req, "TrainingJobName", "trainingJobName")?,
        "trainingJobName",
    )?;
    resource_name(name, "trainingJobName")?;
    let role = string(need(req, "RoleArn", "roleArn")?, "roleArn")?;
    if !role_arn(role) {
        return Err(fail(
            role,
            "roleArn",
            "Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
        ));
    }
    let algo = need(req, "AlgorithmSpecification", "algorithmSpecification")?;
    let mode = string(
        need(
            algo,
            "TrainingInputMode",
            "algorithmSpecification.trainingInputMode",
        )?,
        "algorithmSpecification.trainingInputMode",
    )?;
    one_of(
        mode,
        &["Pipe", "File", "FastFile"],
        "algorithmSpecification.trainingInputMode",
    )?;
    if let Some(defs) = algo.get("MetricDefinitions") {
        metric_definitions(defs)?;
    }
    let entrypoint = algo.get("ContainerEntrypoint").filter(|v| !v.is_null());
    if let Some(e) = entrypoint {
        container_strings(e, "algorithmSpecification.containerEntrypoint")?;
    }
    if let Some(a) = algo.get("ContainerArguments").filter(|v| !v.is_null()) {
        container_strings(a, "algorithmSpecification.containerArguments")?;
        // Without an entrypoint the arguments would go to the image's own entry, which in
        // Clary is the MXNet toolkit: it takes none, and dropping them silently would lie.
        if entrypoint.is_none() {
            return Err(ControlError::Validation(
                "AlgorithmSpecification.ContainerArguments needs ContainerEntrypoint: Clary runs the MXNet training toolkit for an image's own entry, and it takes no arguments. Give ContainerEntrypoint (for example [\"/bin/bash\"]) with the arguments, or leave both out.".into(),
            ));
        }
    }
    if let Some(img) = algo.get("TrainingImage") {
        let img = string(img, "algorithmSpecification.trainingImage")?;
        if img.len() > 255 {
            return Err(fail(
                img,
                "algorithmSpecification.trainingImage",
                "Member must have length less than or equal to 255",
            ));
        }
    }
    let hps = req
        .get("HyperParameters")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let hps = hps.as_object().ok_or_else(|| {
        fail(
            &hps.to_string(),
            "hyperParameters",
            "Member must be a map of strings",
        )
    })?;
    if hps.len() > 100 {
        return Err(fail(
            &format!("{} entries", hps.len()),
            "hyperParameters",
            "Member must have length less than or equal to 100",
        ));
    }
    for (k, v) in hps {
        let at = format!("hyperParameters.{k}");
        let v = v
            .as_str()
            .ok_or_else(|| fail(&v.to_string(), &at, "Member must be a string"))?;
        if k.chars().count() > 256 {
            return Err(fail(
                k,
                "hyperParameters key",
                "Member must have length less than or equal to 256",
            ));
        }
        if v.chars().count() > 2500 {
            return Err(fail(
                v,
                &at,
                "Member must have length less than or equal to 2500",
            ));
        }
    }
    let output = need(req, "OutputDataConfig", "outputDataConfig")?;
    let out_path = string(
        need(output, "S3OutputPath", "outputDataConfig.s3OutputPath")?,
        "outputDataConfig.s3OutputPath",
    )?;
    let Some((out_bucket, _)) =
        clary_control::domain::training::S3Location::parse(out_path).map(|l| (l.bucket, l.prefix))
    else {
        return Err(fail(
            out_path,
            "outputDataConfig.s3OutputPath",
            "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
        ));
    };
    if !bucket_exists(&out_bucket) {
        return Err(ControlError::Validation(format!(
            "The S3 bucket {out_bucket:?} of OutputDataConfig.S3OutputPath {out_path:?} does not exist; create it first (aws s3 mb s3://{out_bucket})"
        )));
    }
    let rc = need(req, "ResourceConfig", "resourceConfig")?;
    string(
        need(rc, "InstanceType", "resourceConfig.instanceType")?,
        "resourceConfig.instanceType",
    )?;
    let count = need(rc, "InstanceCount", "resourceConfig.instanceCount")?
        .as_i64()
        .ok_or_else(|| {
            fail(
                "?",
                "resourceConfig.instanceCount",
                "Member must be an integer",
            )
        })?;
    if count < 1 {
        return Err(fail(
            &count.to_string(),
            "resourceConfig.instanceCount",
            "Member must have value greater than or equal to 1",
        ));
    }
    if count > 20 {
        return Err(ControlError::ResourceLimitExceeded(format!(
            "The account-level service limit 'Number of instances across all training jobs' is 20 Instances, and this job asks for {count}; use fewer instances"
        )));
    }
    if let Some(max) = req
        .get("StoppingCondition")
        .and_then(|s| s.get("MaxRuntimeInSeconds"))
    {
        let m = max.as_i64().unwrap_or(0);
        if !(1..=2_419_200).contains(&m) {
            return Err(fail(
                &max.to_string(),
                "stoppingCondition.maxRuntimeInSeconds",
                "Member must have value between 1 and 2419200",
            ));
        }
    }
    let channels = req
        .get("InputDataConfig")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if req.get("InputDataConfig").is_some() && channels.is_empty() {
        return Err(fail(
            "[]",
            "inputDataConfig",
            "Member must have length greater than or equal to 1",
        ));
    }
    if channels.len() > 20 {
        return Err(fail(
            &format!("{} channels", channels.len()),
            "inputDataConfig",
            "Member must have length less than or equal to 20",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, ch) in channels.iter().enumerate() {
        let at = format!("inputDataConfig.{}.member", i + 1);
        let cname = string(
            need(ch, "ChannelName", &format!("{at}.channelName"))?,
            &format!("{at}.channelName"),
        )?;
        channel_name(cname, &format!("{at}.channelName"))?;
        if !seen.insert(cname.to_string()) {
            return Err(ControlError::Validation(format!(
                "Channel names must be unique; {cname:?} appears more than once in InputDataConfig"
            )));
        }
        if let Some(m) = ch.get("InputMode").and_then(Value::as_str) {
            one_of(m, &["Pipe", "File", "FastFile"], &format!("{at}.inputMode"))?;
        }
        let s3 = ch.get("DataSource").and_then(|d| d.get("S3DataSource")).ok_or_else(|| {
            ControlError::Validation(format!("Channel {cname}: only DataSource.S3DataSource is supported (FileSystemDataSource needs EFS/FSx)"))
        })?;
        let data_type = s3
            .get("S3DataType")
            .and_then(Value::as_str)
            .unwrap_or("S3Prefix");
        one_of(
            data_type,
            &["S3Prefix", "ManifestFile", "AugmentedManifestFile"],
            &format!("{at}.dataSource.s3DataSource.s3DataType"),
        )?;
        if data_type == "AugmentedManifestFile" {
            return Err(ControlError::Validation(format!(
                "Channel {cname}: S3DataType AugmentedManifestFile is not supported by Clary; use ManifestFile (a JSON list of a prefix and keys) or S3Prefix"
            )));
        }
        let uri = s3.get("S3Uri").and_then(Value::as_str).unwrap_or_default();
        let Some((bucket, _)) =
            clary_control::domain::training::S3Location::parse(uri).map(|l| (l.bucket, l.prefix))
        else {
            return Err(fail(
                uri,
                &format!("{at}.dataSource.s3DataSource.s3Uri"),
                "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
            ));
        };
        if !bucket_exists(&bucket) {
            return Err(ControlError::Validation(format!(
                "Channel {cname}: the S3 bucket {bucket:?} of {uri:?} does not exist; create it and upload the data first"
            )));
        }
        if let Some(d) = s3.get("S3DataDistributionType").and_then(Value::as_str) {
            one_of(
                d,
                &["FullyReplicated", "ShardedByS3Key"],
                &format!("{at}.dataSource.s3DataSource.s3DataDistributionType"),
            )?;
        }
        if let Some(c) = ch.get("CompressionType").and_then(Value::as_str) {
            one_of(c, &["None", "Gzip"], &format!("{at}.compressionType"))?;
            let ch_mode = ch.get("InputMode").and_then(Value::as_str).unwrap_or(mode);
            if c == "Gzip" && ch_mode != "Pipe" {
                return Err(ControlError::Validation(format!(
                    "Channel {cname}: CompressionType Gzip is supported only in Pipe input mode; use InputMode Pipe for this channel or upload the data uncompressed"
                )));
            }
        }
        if let Some(r) = ch.get("RecordWrapperType").and_then(Value::as_str) {
            one_of(r, &["None", "RecordIO"], &format!("{at}.recordWrapperType"))?;
        }
    }
    if let Some(cp) = req.get("CheckpointConfig") {
        let uri = string(
            need(cp, "S3Uri", "checkpointConfig.s3Uri")?,
            "checkpointConfig.s3Uri",
        )?;
        let Some((bucket, _)) =
            clary_control::domain::training::S3Location::parse(uri).map(|l| (l.bucket, l.prefix))
        else {
            return Err(fail(
                uri,
                "checkpointConfig.s3Uri",
                "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
            ));
        };
        if !bucket_exists(&bucket) {
            return Err(ControlError::Validation(format!(
                "The S3 bucket {bucket:?} of CheckpointConfig.S3Uri {uri:?} does not exist; create it first (aws s3 mb s3://{bucket})"
            )));
        }
        if let Some(local) = cp.get("LocalPath") {
            let local = string(local, "checkpointConfig.localPath")?;
            if !local.starts_with('/') {
                return Err(fail(
                    local,
                    "checkpointConfig.localPath",
                    "Member must be an absolute path (for example /opt/ml/checkpoints)",
                ));
            }
        }
    }
    if let Some(rs) = req.get("RetryStrategy") {
        let n = need(
            rs,
            "MaximumRetryAttempts",
            "retryStrategy.maximumRetryAttempts",
        )?
        .as_i64()
        .unwrap_or(0);
        if !(1..=30).contains(&n) {
            return Err(fail(
                &n.to_string(),
                "retryStrategy.maximumRetryAttempts",
                "Member must have value between 1 and 30",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "TrainingJobName": "job-1",
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "x/mxnet-training:1.9.0-cpu-py38"},
            "OutputDataConfig": {"S3OutputPath": "s3://bkt/out"},
            "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/data"}}}],
        })
    }

    #[test]
    fn container_entrypoint_and_arguments_follow_the_model() {
        let exists = |b: &str| b == "bkt";
        let mut r = good();
        r["AlgorithmSpecification"]["ContainerEntrypoint"] = json!(["/bin/bash"]);
        r["AlgorithmSpecification"]["ContainerArguments"] = json!(["-c", "echo hi"]);
        create_training_job(&r, &exists).unwrap();
        let err = |r: &Value| create_training_job(r, &exists).unwrap_err().to_string();
        let mut long = r.clone();
        long["AlgorithmSpecification"]["ContainerArguments"] = json!(["x".repeat(257)]);
        assert!(
            err(&long).contains("containerArguments.member"),
            "{}",
            err(&long)
        );
        let mut empty = r.clone();
        empty["AlgorithmSpecification"]["ContainerEntrypoint"] = json!([]);
        assert!(err(&empty).contains("between 1 and 100"), "{}", err(&empty));
        let mut args_only = r.clone();
        args_only["AlgorithmSpecification"]
            .as_object_mut()
            .unwrap()
            .remove("ContainerEntrypoint");
        assert!(
            err(&args_only).contains("needs ContainerEntrypoint"),
            "{}",
            err(&args_only)
        );
    }

    #[test]
    fn names_channels_and_buckets_are_checked() {
        let exists = |b: &str| b == "bkt";
        create_training_job(&good(), &exists).unwrap();
        let mut r = good();
        r["TrainingJobName"] = json!("bad_name");
        assert!(
            create_training_job(&r, &exists)
                .unwrap_err()
                .to_string()
                .contains("trainingJobName")
        );
        let mut r = good();
        r["TrainingJobName"] = json!("a-");
        assert!(create_training_job(&r, &exists).is_err());
        let mut r = good();
        r["InputDataConfig"] = json!((0..21).map(|i| json!({"ChannelName": format!("c{i}"), "DataSource": {"S3DataSource": {"S3Uri": "s3://bkt/x"}}})).collect::<Vec<_>>());
        assert!(
            create_training_job(&r, &exists)
                .unwrap_err()
                .to_string()
                .contains("less than or equal to 20")
        );
        for bad in [".", "..", "a/b", "", &"c".repeat(65)] {
            let mut r = good();
            r["InputDataConfig"][0]["ChannelName"] = json!(bad);
            let e = create_training_job(&r, &exists).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "1 validation error detected: Value '{bad}' at 'inputDataConfig.1.member.channelName' failed to satisfy constraint: Member must"
                )),
                "{e}"
            );
        }
        for good_name in ["...", ".hidden", "train-1_v.2", &"c".repeat(64)] {
            let mut r = good();
            r["InputDataConfig"][0]["ChannelName"] = json!(good_name);
            create_training_job(&r, &exists).unwrap();
        }
        let mut r = good();
        r["OutputDataConfig"]["S3OutputPath"] = json!("s3://nope/out");
        assert!(
            create_training_job(&r, &exists)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        let mut r = good();
        r["RoleArn"] = json!("SageMakerRole");
        assert!(create_training_job(&r, &exists).is_err());
    }

    #[test]
    fn page_sizes_are_refused_outside_their_range_as_aws_does() {
        let at = |v: Value| page_size(&json!({ "MaxResults": v }), "MaxResults", "maxResults", 100);
        assert_eq!(
            at(json!(-1)).unwrap_err().to_string(),
            "1 validation error detected: Value '-1' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
        assert!(at(json!(0)).is_err());
        assert_eq!(
            at(json!(101)).unwrap_err().to_string(),
            "1 validation error detected: Value '101' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"
        );
        assert!(at(json!("ten")).is_err());
        assert_eq!(at(json!(100)).unwrap(), Some(100));
        assert_eq!(at(Value::Null).unwrap(), None);
        assert_eq!(page_size(&json!({}), "limit", "limit", 50).unwrap(), None);
    }

    #[test]
    fn role_arns_are_checked() {
        let exists = |b: &str| b == "bkt";
        let mut r = good();
        r["RoleArn"] = json!("SageMakerRole");
        assert!(create_training_job(&r, &exists).is_err());
    }
}
