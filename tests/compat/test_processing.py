"""Processing jobs against a real Clary server: the SDK v2's FrameworkProcessor(MXNet) and
ScriptProcessor, unchanged, with real MXNet (the SDK scenarios start at module setup, in
parallel, and each test waits for its own), and boto3 for what the SDK leaves out: a stopped
job, a failing one, refusals, listings, tags and the log streams."""
import json
import os
import sys
import time

import pytest

from conftest import IMAGE, ROLE, unique
from test_sdk_training import HERE, Run

GROUP = "/aws/sagemaker/ProcessingJobs"


@pytest.fixture(scope="module")
def runs(server):
    started = {name: Run(server, sys.executable, os.path.join(HERE, "process_v2.py"), name)
               for name in ("framework", "script")}
    yield started
    for r in started.values():
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def stream_text(logs, job):
    """{stream name: text} of a processing job's log streams."""
    out = {}
    for s in logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job + "/")["logStreams"]:
        page = logs.get_log_events(logGroupName=GROUP, logStreamName=s["logStreamName"], startFromHead=True)
        out[s["logStreamName"]] = "\n".join(e["message"] for e in page["events"])
    return out


def proc_lines(logs, job):
    return [json.loads(line[len("PROC "):]) for text in stream_text(logs, job).values()
            for line in text.splitlines() if line.startswith("PROC ")]


def wait_processing(sm, name, until=("Completed", "Failed", "Stopped"), timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_processing_job(ProcessingJobName=name)
        if d["ProcessingJobStatus"] in until:
            return d
        time.sleep(0.3)
    raise AssertionError("processing job %s did not reach %s: %s" % (name, until, d))


def create_job(sm, s3, bucket, name, args, **extra):
    """A processing job of prep.py (uploaded as its code input) with `args`."""
    with open(os.path.join(HERE, "processing", "prep.py"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="%s/code/prep.py" % name, Body=f.read())
    req = dict(
        ProcessingJobName=name, RoleArn=ROLE,
        AppSpecification={"ImageUri": IMAGE,
                          "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/prep.py"],
                          "ContainerArguments": args},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.c5.xlarge", "VolumeSizeInGB": 5}},
        ProcessingInputs=[{"InputName": "code", "S3Input": {
            "S3Uri": "s3://%s/%s/code/" % (bucket, name), "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    req.update(extra)
    return sm.create_processing_job(**req)["ProcessingJobArn"]


def test_framework_processor_with_requirements_and_dependencies_feeds_a_training_job(runs, sm, logs):
    out, stdout = runs["framework"].result()
    d = out["describe"]
    assert d["ProcessingJobStatus"] == "Completed"
    assert d["AppSpecification"]["ContainerEntrypoint"] == ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"]
    assert d["AppSpecification"]["ContainerArguments"] == ["--scale", "0.5"]
    assert d["ProcessingStartTime"] <= d["ProcessingEndTime"]
    # logs=True streamed the job's own lines: runproc.sh installed requirements.txt with the
    # runtime's pip, and the script saw its dependency, MXNet and its resourceconfig.json.
    assert "Successfully installed tabulate-0.9.0" in stdout
    seen = proc_lines(logs, out["job"])[0]
    assert seen["helper"] == "hello from a dependency" and seen["tabulate"] == "0.9.0"
    assert seen["mxnet"] == "1.9.1" and seen["rows"] == 20
    assert seen["resourceconfig"] == {"current_host": "algo-1", "hosts": ["algo-1"]}
    # The script appended to its input; the stored object kept its bytes.
    assert "999,999" not in out["raw_after"]
    # The training job trained on the processed output: y = 3x became y = 6 * (0.5x).
    t = sm.describe_training_job(TrainingJobName=out["training_job"])
    assert t["TrainingJobStatus"] == "Completed"
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=out["training_job"] + "/")["logStreams"]
    text = "\n".join(e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"])
    fit = json.loads(text.split("FIT ", 1)[1].splitlines()[0])
    assert fit["rows"] == 20 and abs(fit["weight"] - 6.0) < 0.5, fit


def test_script_processor_on_two_instances_with_sharded_pipe_and_continuous_io(runs, logs):
    out, _ = runs["script"].result()
    d = out["describe"]
    assert d["ProcessingJobStatus"] == "Completed"
    assert d["Environment"] == {"PROC_FLAVOUR": "script"}
    assert d["ProcessingInputs"][1]["S3Input"]["S3InputMode"] == "Pipe"
    # Each host was told who it is, and got its own share of the sharded input.
    reports = out["reports"]
    assert sorted(reports) == ["algo-1.json", "algo-2.json"]
    for host in ("algo-1", "algo-2"):
        r = reports[host + ".json"]
        assert r["resourceconfig"] == {"current_host": host, "hosts": ["algo-1", "algo-2"]}
        assert r["hostname"] == host and r["env"] == "script"
        # Pipe mode: the gzip object arrived decompressed through <LocalPath>_0.
        assert r["pipe_sha256"] == out["expected_sha256"]
    a, b = reports["algo-1.json"]["shard"], reports["algo-2.json"]["shard"]
    assert sorted(a + b) == ["s-%d.txt" % i for i in range(4)] and not set(a) & set(b)
    # Continuous: both hosts' files were in S3 while the job still ran.
    assert out["early"] == ["algo-1-started.txt", "algo-2-started.txt"]
    assert out["status_when_early"] == "InProgress"
    # One log stream per host, named as SageMaker names them.
    names = sorted(stream_text(logs, out["job"]))
    assert [n.split("/", 1)[1].rsplit("-", 1)[0] for n in names] == ["algo-1", "algo-2"]
    assert all(n.rsplit("-", 1)[1].isdigit() for n in names)


def test_stopping_a_running_job(sm, s3, bucket, logs):
    name = unique("proc-stop")
    create_job(sm, s3, bucket, name, ["--mode", "none", "--sleep", "120"])
    deadline = time.time() + 60
    while not any("still processing" in t for t in stream_text(logs, name).values()):
        assert time.time() < deadline, "the job never started"
        time.sleep(0.3)
    sm.stop_processing_job(ProcessingJobName=name)
    assert sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"] in ("Stopping", "Stopped")
    d = wait_processing(sm, name, timeout=30)
    assert d["ProcessingJobStatus"] == "Stopped"
    assert "FailureReason" not in d and d["ProcessingEndTime"] >= d["ProcessingStartTime"]
    with pytest.raises(sm.exceptions.ClientError, match="already ended with status Stopped"):
        sm.stop_processing_job(ProcessingJobName=name)


def test_a_failing_job_says_why_and_max_runtime_ends_one(sm, s3, bucket):
    failing, slow = unique("proc-fail"), unique("proc-slow")
    create_job(sm, s3, bucket, failing, ["--mode", "none", "--exit", "3"])
    create_job(sm, s3, bucket, slow, ["--mode", "none", "--sleep", "60"],
               StoppingCondition={"MaxRuntimeInSeconds": 3})
    d = wait_processing(sm, failing)
    assert d["ProcessingJobStatus"] == "Failed"
    assert "exited with code 3" in d["FailureReason"] and d["ExitMessage"] == d["FailureReason"]
    summary = sm.list_processing_jobs(NameContains=failing)["ProcessingJobSummaries"]
    assert [s["ProcessingJobStatus"] for s in summary] == ["Failed"]
    assert summary[0]["FailureReason"] == d["FailureReason"]
    d = wait_processing(sm, slow, timeout=60)
    assert d["ProcessingJobStatus"] == "Stopped"
    assert d["FailureReason"].startswith("MaxRuntimeExceeded")


def test_manifest_input_refusals_listings_and_tags(sm, s3, bucket, logs):
    name = unique("proc-tags")
    # A ManifestFile input: only the objects the manifest lists appear.
    for key in ("a.csv", "b.csv", "unlisted.csv"):
        s3.put_object(Bucket=bucket, Key="%s/data/%s" % (name, key), Body=b"1,2\n")
    manifest = json.dumps([{"prefix": "s3://%s/%s/data/" % (bucket, name)}, "a.csv", "b.csv"])
    s3.put_object(Bucket=bucket, Key="%s/manifest.json" % name, Body=manifest.encode())
    with open(os.path.join(HERE, "processing", "prep.py"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="%s/code/prep.py" % name, Body=f.read())
    inputs = [{"InputName": "code", "S3Input": {
                  "S3Uri": "s3://%s/%s/code/" % (bucket, name), "LocalPath": "/opt/ml/processing/input/code",
                  "S3DataType": "S3Prefix"}},
              {"InputName": "listed", "S3Input": {
                  "S3Uri": "s3://%s/%s/manifest.json" % (bucket, name), "LocalPath": "/opt/ml/processing/input/listed",
                  "S3DataType": "ManifestFile", "S3InputMode": "File"}}]
    arn = create_job(sm, s3, bucket, name, ["--mode", "none"], Tags=[{"Key": "team", "Value": "data"}],
                     NetworkConfig={"EnableNetworkIsolation": False}, ProcessingInputs=inputs,
                     ExperimentConfig={"TrialComponentDisplayName": "prep"})
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "data"}]
    d = wait_processing(sm, name)
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["NetworkConfig"] == {"EnableNetworkIsolation": False}
    assert d["ExperimentConfig"] == {"TrialComponentDisplayName": "prep"}
    assert proc_lines(logs, name)[0]["inputs"]["listed"] == ["a.csv", "b.csv"]
    listed = sm.list_processing_jobs(NameContains=name, StatusEquals="Completed")["ProcessingJobSummaries"]
    assert [s["ProcessingJobArn"] for s in listed] == [arn]
    with pytest.raises(sm.exceptions.ClientError, match="ResourceInUse"):
        create_job(sm, s3, bucket, name, ["--mode", "none"])
    with pytest.raises(sm.exceptions.ClientError, match="Requested resource not found"):
        sm.describe_processing_job(ProcessingJobName=unique("proc-none"))
    dataset = {"InputName": "q", "DatasetDefinition": {"LocalPath": "/opt/ml/processing/q",
               "AthenaDatasetDefinition": {"Catalog": "c", "Database": "d", "QueryString": "select 1",
                                           "OutputS3Uri": "s3://%s/athena" % bucket, "OutputFormat": "PARQUET"}}}
    with pytest.raises(sm.exceptions.ClientError, match="names no registered runtime"):
        create_job(sm, s3, bucket, unique("proc-bad"), ["--mode", "none"],
                   AppSpecification={"ImageUri": "example.com/team/preprocess:1", "ContainerEntrypoint": ["python3"]})
    for inputs, message in (([dataset], "DatasetDefinition"),
                            ([{"InputName": "x", "S3Input": {"S3Uri": "s3://%s/x" % bucket, "LocalPath": "/data",
                                                            "S3DataType": "S3Prefix"}}], "/opt/ml/processing/")):
        with pytest.raises(sm.exceptions.ClientError, match=message):
            create_job(sm, s3, bucket, unique("proc-bad"), ["--mode", "none"], ProcessingInputs=inputs)
