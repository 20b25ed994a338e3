"""Training jobs end to end through boto3 against a real `clary server`, with real MXNet."""
import glob
import io
import json
import os
import tarfile
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, Server, job_request, log_text, unique, upload_code, wait_for, wait_secondary

EXAMPLE = os.path.join(ROOT, "examples", "mnist")


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist")
    import subprocess, sys
    subprocess.run([sys.executable, os.path.join(EXAMPLE, "generate_data.py"), str(out), "--train", "1000", "--test", "300"], check=True)
    return str(out)


def upload_dir(s3, bucket, local, prefix):
    for path in sorted(glob.glob(os.path.join(local, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            s3.upload_file(path, bucket, prefix + "/" + os.path.relpath(path, local))
    return "s3://%s/%s" % (bucket, prefix)


def test_mnist_trains_and_the_model_really_learned(sm, s3, logs, bucket, mnist_data, tmp_path):
    job = unique("mnist")
    source = upload_code(s3, bucket, job, {"train.py": open(os.path.join(EXAMPLE, "train.py")).read()})
    channels = {c: upload_dir(s3, bucket, os.path.join(mnist_data, c), "data/%s/%s" % (job, c)) for c in ("train", "test")}
    arn = sm.create_training_job(**job_request(job, bucket, source, hps={"epochs": "3", "learning-rate": "0.1"}, channels=channels))["TrainingJobArn"]
    assert arn.endswith(":training-job/" + job)
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses[0] == "Starting" and statuses[-1] == "Completed", statuses
    assert "Training" in statuses and "Downloading" in statuses and "Uploading" in statuses, statuses
    assert d["OutputDataConfig"]["KmsKeyId"] == ""
    assert d["HyperParameters"]["sagemaker_program"] == '"train.py"'
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == "s3://%s/output/%s/output/model.tar.gz" % (bucket, job)
    body = s3.get_object(Bucket=bucket, Key=uri.split("/", 3)[3])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model-0000.params", "model-shapes.json", "model-symbol.json"]
    import mxnet as mx
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "model-symbol.json"), ["data"], str(tmp_path / "model-0000.params"))
    x = np.load(os.path.join(mnist_data, "test", "images.npy"))
    y = np.load(os.path.join(mnist_data, "test", "labels.npy"))
    accuracy = (net(mx.nd.array(x)).argmax(axis=1).asnumpy() == y).mean()
    text = log_text(logs, job)
    # Chance is 0.1; the example reaches ~0.98 on this data.
    assert accuracy > 0.85, (accuracy, text[-2000:])
    assert "final test accuracy" in text and "Invoking user script" in text, text[-2000:]


def test_failing_script_gets_the_toolkit_failure_reason(sm, s3, logs, bucket):
    job = unique("fails")
    source = upload_code(s3, bucket, job, {"train.py": "import sys\nprint('about to fail')\nsys.exit(3)\n"})
    sm.create_training_job(**job_request(job, bucket, source, hps={"x": "1"}))
    d = wait_for(sm, job, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 3\nErrorMessage \"\"\nCommand \""), reason
    assert reason.endswith(" -- train.py -x 1\""), reason
    assert "exited with code 3" in d["SecondaryStatusTransitions"][-1]["StatusMessage"]
    assert "about to fail" in log_text(logs, job)


def test_script_written_failure_file_wins(sm, s3, bucket):
    job = unique("ownfail")
    script = ("import os\nopen(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('bad data: row 7')\n"
              "raise SystemExit(1)\n")
    source = upload_code(s3, bucket, job, {"train.py": script})
    sm.create_training_job(**job_request(job, bucket, source))
    d = wait_for(sm, job, timeout=120)
    assert d["FailureReason"] == "AlgorithmError: bad data: row 7"


SLEEPER = """
import os, signal, sys, time
open(os.path.join(os.environ['SM_MODEL_DIR'], 'checkpoint.txt'), 'w').write('saved')
def on_term(*_):
    print('got SIGTERM', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print('sleeping', flush=True)
time.sleep(120)
"""


def test_stop_sends_sigterm_and_keeps_saved_artifacts(sm, s3, logs, bucket):
    job = unique("stop")
    source = upload_code(s3, bucket, job, {"train.py": SLEEPER})
    sm.create_training_job(**job_request(job, bucket, source))
    wait_secondary(sm, job, "Training")
    deadline = time.time() + 30
    while "sleeping" not in log_text(logs, job) and time.time() < deadline:
        time.sleep(0.2)
    sm.stop_training_job(TrainingJobName=job)
    assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = wait_for(sm, job, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped" and d["SecondaryStatus"] == "Stopped"
    assert "got SIGTERM" in log_text(logs, job)
    key = d["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert tar.getnames() == ["checkpoint.txt"]
    with pytest.raises(ClientError) as e:
        sm.stop_training_job(TrainingJobName=job)
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_the_job(sm, s3, bucket):
    job = unique("maxrun")
    source = upload_code(s3, bucket, job, {"train.py": "import time\ntime.sleep(120)\n"})
    sm.create_training_job(**job_request(job, bucket, source, max_run=2))
    d = wait_for(sm, job, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped"
    assert d["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeExceeded" in d["FailureReason"]


def test_requirements_txt_and_shell_entry_point(sm, s3, logs, bucket):
    job = unique("shell")
    files = {
        "run.sh": "#!/bin/sh\necho \"args: $@\"\necho \"host: $SM_CURRENT_HOST\"\n",
    }
    source = upload_code(s3, bucket, job, files)
    sm.create_training_job(**job_request(job, bucket, source, program="run.sh", hps={"name": '"a b"', "n": "2"}))
    d = wait_for(sm, job, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    text = log_text(logs, job)
    assert "args: -n 2 --name a b" in text and "host: algo-1" in text


def test_bad_requests_get_aws_errors_and_change_nothing(sm, s3, bucket, server):
    before = len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    source = upload_code(s3, bucket, "bad", {"train.py": "pass"})

    def code_of(req):
        with pytest.raises(ClientError) as e:
            sm.create_training_job(**req)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    code, msg = code_of(job_request("bad_name!", bucket, source))
    assert code == "ValidationException" and "trainingJobName" in msg
    chans = {"c%d" % i: "s3://%s/x" % bucket for i in range(21)}
    code, msg = code_of(job_request(unique("many"), bucket, source, channels=chans))
    assert code == "ValidationException" and "20" in msg
    code, msg = code_of(job_request(unique("nobucket"), "no-such-bucket-xyz", source))
    assert code == "ValidationException" and "does not exist" in msg
    req = job_request(unique("retries"), bucket, source)
    req["RetryStrategy"] = {"MaximumRetryAttempts": 31}
    code, msg = code_of(req)
    assert code == "ValidationException" and "retryStrategy.maximumRetryAttempts" in msg
    req = job_request(unique("ckpt"), bucket, source)
    req["CheckpointConfig"] = {"S3Uri": "s3://no-such-bucket-xyz/ckpt"}
    code, msg = code_of(req)
    assert code == "ValidationException" and "CheckpointConfig.S3Uri" in msg and "does not exist" in msg
    # A duplicate name is ResourceInUse and leaves the first job alone.
    job = unique("dup")
    sm.create_training_job(**job_request(job, bucket, source))
    code, _ = code_of(job_request(job, bucket, source))
    assert code == "ResourceInUse"
    with pytest.raises(ClientError) as e:
        sm.describe_training_job(TrainingJobName="does-not-exist")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    # Wrong signature.
    e_ = server.env()
    import boto3
    bad = boto3.client("sagemaker", endpoint_url=e_["AWS_ENDPOINT_URL"], aws_access_key_id=e_["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key="wrong-secret", region_name="us-east-1")
    with pytest.raises(ClientError) as e:
        bad.list_training_jobs()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unknown = boto3.client("sagemaker", endpoint_url=e_["AWS_ENDPOINT_URL"], aws_access_key_id="AKNOBODY",
                           aws_secret_access_key="x", region_name="us-east-1")
    with pytest.raises(ClientError) as e:
        unknown.list_training_jobs()
    assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"
    import urllib.request
    req = urllib.request.Request(e_["AWS_ENDPOINT_URL"] + "/", data=b"{}", method="POST",
                                 headers={"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as h:
        urllib.request.urlopen(req)
    assert json.loads(h.value.read())["__type"] == "MissingAuthenticationToken"
    after = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    assert len(after) == before + 1
    wait_for(sm, job, timeout=120)


def test_list_training_jobs_filters_sorts_and_pages(sm, s3, bucket):
    tag = unique("lst")
    source = upload_code(s3, bucket, tag, {"train.py": "pass"})
    names = ["%s-%d" % (tag, i) for i in range(3)]
    for n in names:
        sm.create_training_job(**job_request(n, bucket, source))
    for n in names:
        wait_for(sm, n, timeout=120)
    page = sm.list_training_jobs(NameContains=tag, SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert [j["TrainingJobName"] for j in page["TrainingJobSummaries"]] == names[:2]
    rest = sm.list_training_jobs(NameContains=tag, SortBy="Name", SortOrder="Ascending", MaxResults=2, NextToken=page["NextToken"])
    assert [j["TrainingJobName"] for j in rest["TrainingJobSummaries"]] == names[2:]
    assert "NextToken" not in rest
    done = sm.list_training_jobs(NameContains=tag, StatusEquals="Completed")["TrainingJobSummaries"]
    assert len(done) == 3
    paginator = sm.get_paginator("list_training_jobs")
    seen = [j["TrainingJobName"] for p in paginator.paginate(NameContains=tag, PaginationConfig={"PageSize": 1}) for j in p["TrainingJobSummaries"]]
    assert sorted(seen) == names


def test_tags_on_training_jobs(sm, s3, bucket):
    job = unique("tags")
    source = upload_code(s3, bucket, job, {"train.py": "pass"})
    req = job_request(job, bucket, source)
    req["Tags"] = [{"Key": "team", "Value": "vision"}]
    arn = sm.create_training_job(**req)["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "vision"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "dev"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "dev"}]
    wait_for(sm, job, timeout=120)


def test_server_restart_reattaches_running_job(tmp_path):
    srv = Server(tmp_path / "restart").start()
    try:
        sm, s3 = srv.client("sagemaker"), srv.client("s3")
        s3.create_bucket(Bucket="restart-bucket")
        job = unique("restart")
        script = "import time\nprint('started', flush=True)\ntime.sleep(4)\nprint('finished after restart', flush=True)\n"
        source = upload_code(s3, "restart-bucket", job, {"train.py": script})
        sm.create_training_job(**job_request(job, "restart-bucket", source))
        wait_secondary(sm, job, "Training")
        srv.stop()
        srv.start()
        sm, logs = srv.client("sagemaker"), srv.client("logs")
        d = wait_for(sm, job, timeout=60)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        assert "finished after restart" in log_text(logs, job)
    finally:
        srv.stop()


def test_job_whose_agent_died_with_the_server_is_failed_not_left_running(tmp_path):
    srv = Server(tmp_path / "lost").start()
    try:
        sm, s3 = srv.client("sagemaker"), srv.client("s3")
        s3.create_bucket(Bucket="lost-bucket")
        job = unique("lost")
        source = upload_code(s3, "lost-bucket", job, {"train.py": "import time\ntime.sleep(60)\n"})
        sm.create_training_job(**job_request(job, "lost-bucket", source))
        wait_secondary(sm, job, "Training")
        srv.stop()
        # Kill the agent (and its script) as a machine crash would.
        spec_dir = tmp_path / "lost" / "jobs" / job / "algo-1"
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        for p in pids:
            try:
                cmd = open("/proc/%s/cmdline" % p, "rb").read().split(b"\0")
            except OSError:
                continue
            if str(spec_dir / "spec.json").encode() in cmd:
                os.killpg(int(p), 9)
        srv.start()
        d = wait_for(srv.client("sagemaker"), job, timeout=30)
        assert d["TrainingJobStatus"] == "Failed"
        assert "restarted" in d["FailureReason"] or "exited without reporting" in d["FailureReason"]
    finally:
        srv.stop()


def test_queue_holds_jobs_until_capacity_frees(tmp_path):
    srv = Server(tmp_path / "queue", extra_args=["--capacity-cpus", "4"]).start()
    try:
        sm, s3 = srv.client("sagemaker"), srv.client("s3")
        s3.create_bucket(Bucket="queue-bucket")
        first, second = unique("q1"), unique("q2")
        source = upload_code(s3, "queue-bucket", first, {"train.py": "import time\ntime.sleep(3)\n"})
        sm.create_training_job(**job_request(first, "queue-bucket", source))
        sm.create_training_job(**job_request(second, "queue-bucket", source))
        time.sleep(1)
        d2 = sm.describe_training_job(TrainingJobName=second)
        assert d2["SecondaryStatus"] == "Starting"
        assert "waiting for capacity" in d2["SecondaryStatusTransitions"][-1]["StatusMessage"]
        assert wait_for(sm, first, timeout=60)["TrainingJobStatus"] == "Completed"
        assert wait_for(sm, second, timeout=60)["TrainingJobStatus"] == "Completed"
    finally:
        srv.stop()


def test_a_freed_slot_starts_the_next_queued_job_at_once(tmp_path):
    """Capacity for one job at a time: each job must start as soon as the one before it ends,
    not at the scheduler's next poll (it used to wait up to 500 ms)."""
    import statistics
    srv = Server(tmp_path / "drain", extra_args=["--capacity-cpus", "4"]).start()
    try:
        sm, s3 = srv.client("sagemaker"), srv.client("s3")
        s3.create_bucket(Bucket="drain")
        jobs = [unique("drain") for _ in range(5)]
        source = upload_code(s3, "drain", jobs[0], {"train.py": "import time\ntime.sleep(0.2)\n"})
        started = time.time()
        for job in jobs:
            sm.create_training_job(**job_request(job, "drain", source))
        done = [wait_for(sm, job, timeout=120) for job in jobs]
        elapsed = time.time() - started
        assert all(d["TrainingJobStatus"] == "Completed" for d in done)
        gaps = [b["TrainingStartTime"].timestamp() - a["TrainingEndTime"].timestamp()
                for a, b in zip(done, done[1:])]
        print("5 queued jobs drained at %.1f jobs/s; gaps %s" % (len(jobs) / elapsed, ["%.3f" % g for g in gaps]))
        assert all(g >= 0 for g in gaps), gaps
        assert statistics.median(gaps) < 0.2, gaps
    finally:
        srv.stop()


def test_requirements_txt_installs_into_the_job_not_the_runtime(sm, s3, logs, bucket):
    job = unique("reqs")
    script = ("import tabulate, sys, mxnet\n"
              "print('tabulate from', tabulate.__file__)\n"
              "print(tabulate.tabulate([[1, 2]], headers=['a', 'b']))\n")
    source = upload_code(s3, bucket, job, {"train.py": script, "requirements.txt": "tabulate==0.9.0\n"})
    sm.create_training_job(**job_request(job, bucket, source))
    d = wait_for(sm, job, timeout=300)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert "Installing dependencies" in text and "Successfully installed tabulate" in text
    assert ".clary-venv" in text.split("tabulate from", 1)[1].splitlines()[0]
    import subprocess
    from conftest import RUNTIMES
    runtime_python = os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python")
    assert subprocess.run([runtime_python, "-c", "import tabulate"], capture_output=True).returncode != 0
