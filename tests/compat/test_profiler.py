"""SageMaker Debugger's settings of a training job: ProfilerConfig with SageMaker's defaults,
ProfilingStatus, the rules (reported as not evaluated: Clary runs no rule images),
UpdateTrainingJob on a running job and its refusals, the SDK v2's update_profiler /
disable_profiling / enable_default_profiling, and the system monitor's files in Debugger's
format under the profiler's output path, which follow an interval change."""
import json
import os
import statistics
import sys
import time

import pytest
from botocore.exceptions import ClientError

from conftest import job_request, unique, upload_code, wait_for, wait_secondary
from test_sdk_training import HERE, Run

SCRIPT = open(os.path.join(HERE, "profiler", "train.py")).read()
RULE = {"RuleConfigurationName": "ProfilerReport-1", "RuleEvaluatorImage": "895741380848.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport"}}
DEBUG_RULE = {"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluatorImage": "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest",
              "RuleParameters": {"rule_to_invoke": "LossNotDecreasing"}}


def profiled_request(s3, bucket, job, seconds, profiler=None, **extra):
    source = upload_code(s3, bucket, job, {"train.py": SCRIPT})
    req = job_request(job, bucket, source)
    req["Environment"] = {"SECONDS_TO_RUN": str(seconds)}
    if profiler is not None:
        req["ProfilerConfig"] = profiler
    req.update(extra)
    return req


def system_lines(s3, bucket, prefix):
    """Every event line under `prefix` (…/profiler-output/system/incremental/), with its key."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    lines = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        lines += [(key, json.loads(l)) for l in body.splitlines() if l.strip()]
    return keys, lines


def test_defaults_are_filled_in_and_rules_are_not_evaluated(server, sm, s3, bucket):
    job = unique("prof-defaults")
    hook = {"S3OutputPath": "s3://%s/debug" % bucket, "CollectionConfigurations": [{"CollectionName": "losses"}]}
    tb = {"S3OutputPath": "s3://%s/tb" % bucket, "LocalPath": "/opt/ml/output/tensorboard"}
    req = profiled_request(s3, bucket, job, 1, profiler={"DisableProfiler": False},
                           ProfilerRuleConfigurations=[RULE], DebugHookConfig=hook,
                           DebugRuleConfigurations=[DEBUG_RULE], TensorBoardOutputConfig=tb)
    sm.create_training_job(**req)
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    account = d["TrainingJobArn"].split(":")[4]
    assert d["ProfilerConfig"] == {"S3OutputPath": "s3://sagemaker-us-east-1-%s/" % account,
                                   "ProfilingIntervalInMilliseconds": 500, "DisableProfiler": False}
    assert d["ProfilingStatus"] == "Enabled"
    assert d["ProfilerRuleConfigurations"] == [RULE]
    assert d["DebugHookConfig"] == hook and d["TensorBoardOutputConfig"] == tb
    assert d["DebugRuleConfigurations"] == [DEBUG_RULE]
    for statuses, name in ((d["ProfilerRuleEvaluationStatuses"], "ProfilerReport-1"),
                           (d["DebugRuleEvaluationStatuses"], "LossNotDecreasing")):
        [s] = statuses
        assert s["RuleConfigurationName"] == name and s["RuleEvaluationStatus"] == "Error"
        assert "does not run rule evaluator images" in s["StatusDetails"]
        assert abs(s["LastModifiedTime"].timestamp() - d["CreationTime"].timestamp()) < 5

    plain = unique("prof-none")
    sm.create_training_job(**profiled_request(s3, bucket, plain, 0))
    p = wait_for(sm, plain)
    assert p["ProfilingStatus"] == "Disabled" and "ProfilerConfig" not in p
    assert "ProfilerRuleEvaluationStatuses" not in p and "FinalMetricDataList" not in p


@pytest.mark.parametrize("interval", [0, 250, 3000])
def test_intervals_sagemaker_does_not_accept_are_refused(sm, s3, bucket, interval):
    job = unique("prof-bad")
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**profiled_request(s3, bucket, job, 0, profiler={
            "S3OutputPath": "s3://%s/p" % bucket, "ProfilingIntervalInMilliseconds": interval}))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "[100, 200, 500, 1000, 5000, 60000]" in e.value.response["Error"]["Message"]


def test_update_changes_the_interval_and_the_monitor_follows(server, sm, s3, bucket):
    job = unique("prof-update")
    out = "s3://%s/prof" % bucket
    sm.create_training_job(**profiled_request(s3, bucket, job, 9, profiler={
        "S3OutputPath": out, "ProfilingIntervalInMilliseconds": 100}))
    wait_secondary(sm, job, "Training")
    time.sleep(3)
    changed_at = time.time()
    arn = sm.update_training_job(TrainingJobName=job, ProfilerConfig={"ProfilingIntervalInMilliseconds": 1000},
                                 ProfilerRuleConfigurations=[RULE])["TrainingJobArn"]
    d = sm.describe_training_job(TrainingJobName=job)
    assert arn == d["TrainingJobArn"]
    assert d["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 1000 and d["ProfilerConfig"]["S3OutputPath"] == out
    assert [s["RuleConfigurationName"] for s in d["ProfilerRuleEvaluationStatuses"]] == ["ProfilerReport-1"]
    with pytest.raises(ClientError) as e:
        sm.update_training_job(TrainingJobName=job, ProfilerConfig={"S3OutputPath": "s3://%s/elsewhere" % bucket})
    assert "cannot be changed" in e.value.response["Error"]["Message"]
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")

    prefix = "prof/%s/profiler-output/system/incremental/" % job
    keys, lines = system_lines(s3, bucket, prefix)
    assert keys and all(k.endswith(".algo-1.json") for k in keys), keys
    for key in keys:
        hour, name = key[len(prefix):].split("/")
        minute = int(name.split(".")[0])
        assert minute % 60 == 0 and time.strftime("%Y%m%d%H", time.gmtime(minute)) == hour
    times = sorted({e["Timestamp"] for _, e in lines if e["Name"] == "cpu0" and e["Dimension"] == "CPUUtilization"})
    before = [b - a for a, b in zip(times, times[1:]) if b < changed_at]
    after = [b - a for a, b in zip(times, times[1:]) if a > changed_at + 1.5]
    assert len(before) >= 10 and 0.08 <= statistics.median(before) <= 0.2, before
    assert len(after) >= 3 and 0.85 <= statistics.median(after) <= 1.2, after

    events = [e for _, e in lines]
    assert {"cpu", "memory", "i/o", "network"} <= {e["Type"] for e in events}
    for e in events:
        assert set(e) == {"Type", "Name", "Dimension", "Value", "NodeId", "Timestamp"} and e["NodeId"] == "algo-1"
    cpu = [e["Value"] for e in events if e["Dimension"] == "CPUUtilization"]
    assert all(0 <= v <= 100 for v in cpu) and max(cpu) > 50, "the busy script keeps a core busy"
    mem = [e["Value"] for e in events if e["Name"] == "MemoryUsedPercent"]
    assert mem and all(0 < v < 100 for v in mem)
    assert {e["Dimension"] for e in events if e["Type"] == "network"} == {"Algorithm", "Platform"}

    cw = server.client("cloudwatch")
    listed = cw.list_metrics(Namespace="/aws/sagemaker/TrainingJobs",
                             Dimensions=[{"Name": "TrainingJobName", "Value": job}])["Metrics"]
    assert {"CPUUtilization", "MemoryUtilization", "DiskUtilization"} <= {m["MetricName"] for m in listed}
    stats = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs", MetricName="MemoryUtilization",
        Dimensions=[{"Name": "Host", "Value": job + "/algo-1"}, {"Name": "TrainingJobName", "Value": job}],
        StartTime=d["TrainingStartTime"].timestamp() - 60, EndTime=d["TrainingEndTime"].timestamp() + 60,
        Period=3600, Statistics=["Maximum", "SampleCount"])
    [point] = stats["Datapoints"]
    assert point["SampleCount"] >= 20 and 0 < point["Maximum"] < 100

    with pytest.raises(ClientError) as e:
        sm.update_training_job(TrainingJobName=job, ProfilerConfig={"ProfilingIntervalInMilliseconds": 500})
    err = e.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert err["Message"] == "The training job %s is Completed: only a training job that is InProgress can be updated" % job
    with pytest.raises(ClientError) as e:
        sm.update_training_job(TrainingJobName=unique("prof-missing"), ProfilerConfig={"DisableProfiler": True})
    assert "does not exist" in e.value.response["Error"]["Message"]


def test_disabled_profiler_writes_nothing(sm, s3, bucket):
    job = unique("prof-off")
    sm.create_training_job(**profiled_request(s3, bucket, job, 2, profiler={
        "S3OutputPath": "s3://%s/off" % bucket, "DisableProfiler": True}))
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed" and d["ProfilingStatus"] == "Disabled"
    assert d["ProfilerConfig"]["DisableProfiler"] is True
    keys, _ = system_lines(s3, bucket, "off/%s/" % job)
    assert keys == []


def test_sdk_update_disable_and_enable_profiling(server):
    found, _ = Run(server, sys.executable, os.path.join(HERE, "profiler_v2.py")).result()
    job = found["job"]
    created, updated = found["created"], found["updated"]
    assert created["ProfilingStatus"] == "Enabled"
    assert created["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    default_path = created["ProfilerConfig"]["S3OutputPath"]
    assert default_path.startswith("s3://sagemaker-us-east-1-")
    assert updated["ProfilerConfig"] == {"S3OutputPath": default_path, "ProfilingIntervalInMilliseconds": 1000,
                                         "DisableProfiler": False}
    assert found["disabled"]["ProfilingStatus"] == "Disabled"
    assert found["disable_twice"] == "Profiler is already disabled."
    assert found["enabled"]["ProfilingStatus"] == "Enabled"
    assert found["final"]["TrainingJobStatus"] == "Completed"
    assert found["output_path"] == default_path.rstrip("/") + "/" + job + "/profiler-output"
