"""Job overhead: a 1-second training script run bare, and as a Clary training job, in the
same run. Prints each median, the ratio and Clary's absolute overhead (goal: <= 0.3 s).

The Clary time is CreateTrainingJob until DescribeTrainingJob reports Completed (polled every
10 ms), which includes staging code and data, the SM_* contract, log shipping and packaging
model.tar.gz. Needs a running server and `eval "$(clary env)"`, unless `--bin` is given.

    python bench/job_overhead.py [--runs 5] [--runtime-python PATH] [--bin BIN] [--before BIN]

`--bin BIN` starts `BIN server` on a fresh data dir and a free loopback port (runtimes from
CLARY_RUNTIMES_DIR, default ~/.cache/clary/runtimes) and measures it instead of the server in
the environment. `--before BIN` does the same for a second binary (an older build) in the same
run, its jobs alternating with the first's, and prints the after/before ratios; "after" is
`--bin`, or the environment's server without it. Servers started here are stopped by PID.
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clary_server import ClaryServer  # noqa: E402

SCRIPT = "import time, os\ntime.sleep(1.0)\nopen(os.path.join(os.environ.get('SM_MODEL_DIR', '.'), 'm.txt'), 'w').write('x')\n"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"


def job_seconds(sm, bucket, i):
    """One job, CreateTrainingJob until it has ended, in seconds."""
    job = "bench-%s-%d" % (uuid.uuid4().hex[:8], i)
    t0 = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        OutputDataConfig={"S3OutputPath": "s3://%s/out" % bucket},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://%s/data/train" % bucket}}}],
        HyperParameters={"sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": '"s3://%s/code/sourcedir.tar.gz"' % bucket})
    while True:
        d = sm.describe_training_job(TrainingJobName=job)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.01)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--runtime-python", default=os.path.expanduser(
        os.path.join(os.environ.get("CLARY_RUNTIMES_DIR", "~/.cache/clary/runtimes"), "mxnet-1.9/bin/python")))
    p.add_argument("--bin", metavar="BIN", help="start BIN server and measure it instead of the environment's server")
    p.add_argument("--before", metavar="BIN", help="a second clary binary (an older build) measured in the same run")
    a = p.parse_args()
    servers = []
    try:
        targets = []  # (sagemaker client, bucket, job times)
        if a.bin:
            servers.append(ClaryServer(a.bin, "after"))
            targets.append(setup(servers[-1].client("sagemaker"), servers[-1].client("s3")))
        else:
            targets.append(setup(boto3.client("sagemaker"), boto3.client("s3")))
        if a.before:
            servers.append(ClaryServer(a.before, "before"))
            targets.append(setup(servers[-1].client("sagemaker"), servers[-1].client("s3")))
        measure(a, targets)
    finally:
        for s in servers:
            s.stop()


def setup(sm, s3):
    bucket = "bench-" + uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=bucket)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("train.py")
        info.size = len(SCRIPT)
        t.addfile(info, io.BytesIO(SCRIPT.encode()))
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=buf.getvalue())
    s3.put_object(Bucket=bucket, Key="data/train/x.csv", Body=b"1,2,3\n")
    return sm, bucket, []


def measure(a, targets):
    bare = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "train.py")
        open(path, "w").write(SCRIPT)
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([a.runtime_python, path], check=True, cwd=d)
            bare.append(time.perf_counter() - t0)

    for i in range(a.runs):
        for sm, bucket, times in (targets if i % 2 == 0 else targets[::-1]):  # A B, B A, ...
            times.append(job_seconds(sm, bucket, i))
    clary = targets[0][2]

    b, c = statistics.median(bare), statistics.median(clary)
    print("runs: %d" % a.runs)
    print("bare script       median %.3f s  (min %.3f)" % (b, min(bare)))
    print("clary job         median %.3f s  (min %.3f)" % (c, min(clary)))
    print("ratio clary/bare  %.3f" % (c / b))
    print("overhead          %.3f s  (goal <= 0.300 s)" % (c - b))
    if len(targets) > 1:
        before = targets[1][2]
        o = statistics.median(before)
        print("before job        median %.3f s  (min %.3f)" % (o, min(before)))
        print("ratio before/bare %.3f" % (o / b))
        print("overhead before   %.3f s" % (o - b))
        print("after/before      job %.3f, overhead %.3f  (below 1: the after binary is faster)" % (
            c / o, (c - b) / (o - b) if o - b > 0 else float("nan")))


if __name__ == "__main__":
    sys.exit(main())
