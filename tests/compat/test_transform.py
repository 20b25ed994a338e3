"""Batch transform end to end with boto3 and the real model server: every request field, the
batch variables, filters and join, several instances, failures that name the record, stop.
The model is a small handler (no weights to load), so each job takes a few seconds."""
import base64
import gzip
import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import INFERENCE_IMAGE, ROLE, tar_gz, unique
from test_training import mnist_data  # noqa: F401 (a fixture)

# Sums each CSV row (or a JSON record's "features") and adds OFFSET from the environment; a
# row starting with `env` answers with the batch variables; `boom` fails; `sleep` is slow.
HANDLER = r'''
import json, os, time

def model_fn(model_dir):
    return {"offset": float(os.environ.get("OFFSET", "0"))}

def transform_fn(model, data, content_type, accept):
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("env"):
            keys = ["SAGEMAKER_BATCH", "SAGEMAKER_BATCH_STRATEGY", "SAGEMAKER_MAX_PAYLOAD_IN_MB", "OFFSET"]
            out.append(json.dumps({k: os.environ.get(k) for k in keys}))
            continue
        if "boom" in line:
            raise ValueError("boom on purpose")
        if "sleep" in line:
            time.sleep(60)
        if line.lstrip().startswith(("{", "[")):
            rec = json.loads(line)
            vals = rec["features"] if isinstance(rec, dict) else rec
        else:
            vals = [float(x) for x in line.split(",")]
        total = sum(vals) + model["offset"]
        out.append(json.dumps([total]) if "json" in (accept or "") else repr(total))
    return "\n".join(out) + "\n", accept or "text/csv"
'''

LOG_GROUP = "/aws/sagemaker/TransformJobs"


@pytest.fixture(scope="module")
def model(sm, s3, bucket):
    name = unique("tmodel")
    key = "models/%s/model.tar.gz" % name
    s3.put_object(Bucket=bucket, Key=key, Body=tar_gz({"code/inference.py": HANDLER}))
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": INFERENCE_IMAGE, "ModelDataUrl": "s3://%s/%s" % (bucket, key),
        "Environment": {"OFFSET": "1000"}})
    return name


def request(job, model, bucket, prefix, **kw):
    req = dict(
        TransformJobName=job, ModelName=model,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                         "S3Uri": "s3://%s/%s" % (bucket, prefix)}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://%s/out/%s" % (bucket, job), "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(req.get(k), dict):
            req[k] = dict(req[k], **v)
        else:
            req[k] = v
    return req


def wait_job(sm, job, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_transform_job(TransformJobName=job)
        if d["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            return d
        time.sleep(0.3)
    raise AssertionError("transform job %s did not end: %s" % (job, d))


def read(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def keys(s3, bucket, prefix):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def log_lines(logs, job):
    streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=job + "/")["logStreams"]
    out = {}
    for s in streams:
        page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=s["logStreamName"], startFromHead=True)
        out[s["logStreamName"]] = [e["message"] for e in page["events"]]
    return out


def test_every_field_on_two_instances(sm, s3, logs, bucket, model):
    job = unique("tr-all")
    prefix = "in/%s/" % job
    # Three objects over two instances; one gzip-compressed; records of ~50 KB so that
    # MaxPayloadInMB 1 makes several requests per object, answered in input order.
    rows = ["%d,%s" % (i, ",".join(["1"] * 25000)) for i in range(60)]
    s3.put_object(Bucket=bucket, Key=prefix + "a.csv", Body=("\n".join(rows[:30]) + "\n").encode())
    s3.put_object(Bucket=bucket, Key=prefix + "b.csv", Body="\n".join(rows[30:]).encode())
    s3.put_object(Bucket=bucket, Key=prefix + "sub/c.csv", Body=b"5,5\n\n6,6\n")
    gz_prefix = "gz/%s/" % job
    s3.put_object(Bucket=bucket, Key=gz_prefix + "z.csv", Body=gzip.compress(b"1,2\n3,4\n"))
    req = request(job, model, bucket, prefix,
                  BatchStrategy="MultiRecord", MaxPayloadInMB=1, MaxConcurrentTransforms=3,
                  Environment={"OFFSET": "0.5"},
                  ModelClientConfig={"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 1},
                  TransformOutput={"Accept": "text/csv", "KmsKeyId": "alias/mine"},
                  TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
                  DataCaptureConfig={"DestinationS3Uri": "s3://%s/capture/%s" % (bucket, job),
                                     "GenerateInferenceId": True},
                  Tags=[{"Key": "team", "Value": "ml"}])
    arn = sm.create_transform_job(**req)["TransformJobArn"]
    assert arn.endswith(":transform-job/" + job)
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["MaxPayloadInMB"] == 1 and d["MaxConcurrentTransforms"] == 3
    assert d["BatchStrategy"] == "MultiRecord"
    assert d["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 1}
    assert d["TransformOutput"]["KmsKeyId"] == "alias/mine"
    assert d["TransformResources"]["InstanceCount"] == 2
    assert d["DataProcessing"] == {"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}
    assert d["TransformStartTime"] <= d["TransformEndTime"]
    out = "out/%s/" % job
    assert keys(s3, bucket, out) == [out + "a.csv.out", out + "b.csv.out", out + "sub/c.csv.out"]
    # The job's Environment overrides the model's; records in input order, one per line.
    want = lambda rs: "".join("%r\n" % (float(sum(int(x) for x in r.split(","))) + 0.5) for r in rs)
    assert read(s3, bucket, out + "a.csv.out") == want(rows[:30])
    assert read(s3, bucket, out + "b.csv.out") == want(rows[30:])
    assert read(s3, bucket, out + "sub/c.csv.out") == "10.5\n12.5\n"
    # Data capture: one line per request, both sides; 30 records of 50 KB in 1 MB batches.
    cap = keys(s3, bucket, "capture/%s/" % job)
    assert len(cap) == 3, cap
    events = [json.loads(l) for k in cap if k.endswith("a.csv.jsonl") for l in read(s3, bucket, k).splitlines()]
    assert len(events) == 2
    sent = b"".join(base64.b64decode(e["captureData"]["endpointInput"]["data"]) for e in events)
    assert sent.decode().splitlines() == rows[:30]
    assert all(e["eventMetadata"]["inferenceId"] for e in events)
    # Logs: one stream per instance, each naming its share.
    streams = log_lines(logs, job)
    assert len(streams) == 2, list(streams)
    text = "\n".join(l for ls in streams.values() for l in ls)
    assert "input objects in this host's share (host 1 of 2)" in text
    assert "input objects in this host's share (host 2 of 2)" in text
    assert "Transformed" in text
    # Tags, listing.
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v"}])
    assert {"Key": "k", "Value": "v"} in sm.list_tags(ResourceArn=arn)["Tags"]
    listed = sm.list_transform_jobs(NameContains=job)["TransformJobSummaries"]
    assert [(s["TransformJobName"], s["TransformJobStatus"]) for s in listed] == [(job, "Completed")]

    # Gzip input, SingleRecord, the batch variables and GET /execution-parameters' defaults.
    job2 = unique("tr-gz")
    s3.put_object(Bucket=bucket, Key=gz_prefix + "y.csv", Body=gzip.compress(b"env\n"))
    sm.create_transform_job(**request(job2, model, bucket, gz_prefix, BatchStrategy="SingleRecord",
                                      TransformInput={"CompressionType": "Gzip"}))
    d = wait_job(sm, job2)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["MaxPayloadInMB"] == 6 and "MaxConcurrentTransforms" not in d
    assert d["TransformInput"]["CompressionType"] == "Gzip"
    out2 = "out/%s/" % job2
    assert read(s3, bucket, out2 + "z.csv.out") == "1003.0\n1007.0\n"
    env = json.loads(read(s3, bucket, out2 + "y.csv.out"))
    assert env == {"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
                   "SAGEMAKER_MAX_PAYLOAD_IN_MB": None, "OFFSET": "1000"}


def test_join_with_filters_and_a_manifest(sm, s3, bucket, model):
    job = unique("tr-join")
    s3.put_object(Bucket=bucket, Key="join/%s/data.csv" % job, Body=b"id-1,1,2\nid-2,3,4\n")
    s3.put_object(Bucket=bucket, Key="join/%s/other.csv" % job, Body=b"id-9,9,9\n")
    s3.put_object(Bucket=bucket, Key="join/%s/recs.jsonl" % job,
                  Body=b'{"id": 7, "features": [1, 1]}\n{"id": 8, "features": [2, 2]}\n')
    manifest = [{"prefix": "s3://%s/join/%s/" % (bucket, job)}, "data.csv"]
    s3.put_object(Bucket=bucket, Key="manifests/%s.json" % job, Body=json.dumps(manifest).encode())
    # CSV: drop the ID before the model, keep the ID and the prediction.
    req = request(job, model, bucket, "", TransformInput={
        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile",
                                        "S3Uri": "s3://%s/manifests/%s.json" % (bucket, job)}}},
                  TransformOutput={"Accept": "text/csv"},
                  DataProcessing={"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]", "JoinSource": "Input"})
    sm.create_transform_job(**req)
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["DataProcessing"] == {"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]", "JoinSource": "Input"}
    out = "out/%s/" % job
    # Only the manifest's object.
    assert keys(s3, bucket, out) == [out + "data.csv.out"]
    assert read(s3, bucket, out + "data.csv.out") == "id-1,1003.0\nid-2,1007.0\n"
    # JSON Lines: the answer joins under SageMakerOutput.
    job2 = unique("tr-json")
    s3.put_object(Bucket=bucket, Key="jl/%s/recs.jsonl" % job2,
                  Body=b'{"id": 7, "features": [1, 1]}\n{"id": 8, "features": [2, 2]}\n')
    sm.create_transform_job(**request(
        job2, model, bucket, "jl/%s/" % job2,
        TransformInput={"ContentType": "application/jsonlines"},
        TransformOutput={"Accept": "application/json"},
        DataProcessing={"OutputFilter": "$['id','SageMakerOutput']", "JoinSource": "Input"}))
    d = wait_job(sm, job2)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    lines = read(s3, bucket, "out/%s/recs.jsonl.out" % job2).splitlines()
    assert [json.loads(l) for l in lines] == [{"id": 7, "SageMakerOutput": [1002.0]},
                                              {"id": 8, "SageMakerOutput": [1004.0]}]


def test_failures_name_the_object_and_record_and_leave_no_partial_output(sm, s3, bucket, model):
    # A record larger than MaxPayloadInMB: line 3 of big.csv.
    job = unique("tr-big")
    prefix = "big/%s/" % job
    s3.put_object(Bucket=bucket, Key=prefix + "big.csv",
                  Body=("1,2\n3,4\n" + ",".join(["1"] * 600000) + "\n5,6\n").encode())
    sm.create_transform_job(**request(job, model, bucket, prefix, MaxPayloadInMB=1))
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert "s3://%s/%sbig.csv, line 3: the record is 1199999 bytes, larger than MaxPayloadInMB (1 MB)" % (bucket, prefix) in reason, reason
    assert keys(s3, bucket, "out/%s/" % job) == []
    assert sm.list_transform_jobs(StatusEquals="Failed", NameContains=job)["TransformJobSummaries"][0]["FailureReason"] == reason

    # A model error: the batch's lines, the model's message; no retry left.
    job = unique("tr-boom")
    prefix = "boom/%s/" % job
    s3.put_object(Bucket=bucket, Key=prefix + "a.csv", Body=b"1,2\nboom\n")
    sm.create_transform_job(**request(job, model, bucket, prefix, BatchStrategy="SingleRecord",
                                      ModelClientConfig={"InvocationsMaxRetries": 0}))
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Failed"
    assert "s3://%s/%sa.csv, line 2: the model answered 500" % (bucket, prefix) in d["FailureReason"], d["FailureReason"]
    assert "boom on purpose" in d["FailureReason"]
    assert "(after 1 attempt)" in d["FailureReason"]
    assert keys(s3, bucket, "out/%s/" % job) == []

    # A filter that matches nothing.
    job = unique("tr-filter")
    prefix = "flt/%s/" % job
    s3.put_object(Bucket=bucket, Key=prefix + "a.csv", Body=b"1,2\n")
    sm.create_transform_job(**request(job, model, bucket, prefix, DataProcessing={"InputFilter": "$[5]"}))
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Failed"
    assert "a.csv, line 1: InputFilter $[5] matches nothing in the record" in d["FailureReason"], d["FailureReason"]


def test_stop_leaves_no_partial_output(sm, s3, bucket, model):
    job = unique("tr-stop")
    prefix = "stop/%s/" % job
    s3.put_object(Bucket=bucket, Key=prefix + "a.csv", Body=b"1,2\n3,4\n")
    s3.put_object(Bucket=bucket, Key=prefix + "b.csv", Body=b"1,2\nsleep\n3,4\n")
    sm.create_transform_job(**request(job, model, bucket, prefix, BatchStrategy="SingleRecord"))
    deadline = time.time() + 60
    while time.time() < deadline and keys(s3, bucket, "out/%s/" % job) == []:
        time.sleep(0.2)
    assert keys(s3, bucket, "out/%s/" % job) == ["out/%s/a.csv.out" % job]
    sm.stop_transform_job(TransformJobName=job)
    d = wait_job(sm, job, timeout=60)
    assert d["TransformJobStatus"] == "Stopped", d
    assert "FailureReason" not in d
    # b.csv was half done: nothing of it is visible.
    assert keys(s3, bucket, "out/%s/" % job) == ["out/%s/a.csv.out" % job]
    with pytest.raises(ClientError) as e:
        sm.stop_transform_job(TransformJobName=job)
    assert "already ended with status Stopped" in str(e.value)


def test_refusals_are_aws_shaped(sm, bucket, model):
    with pytest.raises(ClientError) as e:
        sm.describe_transform_job(TransformJobName="no-such-job")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**request(unique("tr-x"), "no-such-model", bucket, "in/"))
    assert 'Could not find model' in str(e.value)
    job = unique("tr-dup")
    sm.create_transform_job(**request(job, model, bucket, "nothing-here/"))
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**request(job, model, bucket, "nothing-here/"))
    assert e.value.response["Error"]["Code"] == "ResourceInUse"
    d = wait_job(sm, job)
    assert d["TransformJobStatus"] == "Failed"
    assert "no objects found under s3://%s/nothing-here/" % bucket in d["FailureReason"]
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**request(unique("tr-x"), model, bucket, "in/",
                                          TransformInput={"SplitType": "TFRecord"}))
    assert "TFRecord is not supported" in str(e.value)


def test_sdk_v2_transformers(server, mnist_data):
    """estimator.transformer and MXNetModel(...).transformer through the SDK v2, unchanged."""
    import os
    import subprocess
    import sys

    import numpy as np
    from conftest import ROOT
    from test_training import EXAMPLE

    env = dict(os.environ, **server.env())
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "compat", "sdk", "transform_v2.py"), EXAMPLE, mnist_data],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:] + "\n".join(l for l in proc.stderr.splitlines() if "configprovider" not in l))[-6000:]
    last = proc.stdout.strip().splitlines()[-1]
    out = json.loads(last[last.index("{"):])
    want = np.array(out["want"])
    # Joined: the ID kept by the output filter, then the 10 class scores, in input order.
    joined = out["joined"]["a.csv"] + out["joined"]["b.csv"]
    assert [l.split(",")[0] for l in joined] == ["r%d" % i for i in range(40)]
    got = np.array([[float(x) for x in l.split(",")[1:]] for l in joined])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # The logs were streamed by transform(logs=True): the job's stream names appear in stdout.
    assert out["t1_job"] in proc.stdout or "Transformed" in proc.stdout
    a = out["attached"]
    assert (a["instance_count"], a["strategy"], a["assemble_with"], a["max_payload"], a["accept"]) == \
        (2, "MultiRecord", "Line", 1, "text/csv")
    # One transformer, two jobs, the same answers (JSON lines this time).
    assert len(set(out["t2_jobs"])) == 2
    for run in out["plain"]:
        got = np.array([json.loads(l) for l in run["a.csv"] + run["b.csv"]])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert out["stopped"] == "Stopped", out["stopped"]


def test_a_killed_host_leaves_no_model_server_behind(server, sm, s3, bucket, model):
    import os
    import signal

    from conftest import pids_of
    job = unique("tr-kill")
    prefix = "kill/%s/" % job
    s3.put_object(Bucket=bucket, Key=prefix + "a.csv", Body=b"sleep\n")
    sm.create_transform_job(**request(job, model, bucket, prefix))
    under = os.path.join(server.data_dir, "transform-jobs", job)
    deadline = time.time() + 60
    while time.time() < deadline and not (pids_of(b"agent", under) and pids_of(b"model-server", under)):
        time.sleep(0.2)
    agents, servers = pids_of(b"agent", under), pids_of(b"model-server", under)
    assert agents and servers, (agents, servers)
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 20
    while time.time() < deadline and pids_of(b"model-server", under):
        time.sleep(0.2)
    assert pids_of(b"model-server", under) == []
    d = wait_job(sm, job, timeout=60)
    assert d["TransformJobStatus"] == "Failed"
    assert "exited without reporting a result" in d["FailureReason"], d["FailureReason"]
