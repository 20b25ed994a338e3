"""Pipe-mode throughput: a channel streamed through Clary's FIFO (`<channel>_0`) against
`cat` of the same files into an ordinary pipe, read by the same reader in the same run.
Prints each median in MB/s and the ratio.

The FIFO figure is what a training script sees: the time from opening `<channel>_0` to its
EOF, measured inside a real training job. The anchor is `cat <files> | reader` outside any
job, on the same bytes (written locally first, then uploaded, so both come from the page
cache). Needs a running server and `eval "$(clary env)"`.

    python bench/pipe/run.py [--mib 1024] [--objects 16] [--runs 3] [--runtime-python PATH]
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

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"

# One reader for both: 1 MiB reads to EOF, timed from the open.
READER = r'''
import os, sys, time
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ["SM_INPUT_DIR"], "data", "bench_0")
t0 = time.perf_counter()
n = 0
with open(path, "rb", buffering=0) as f:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
print("PIPE-BENCH %d %.6f" % (n, time.perf_counter() - t0), flush=True)
'''


def job_seconds(logs, job):
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=job + "/")["logStreams"]
    for s in streams:
        for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                     logStreamName=s["logStreamName"], startFromHead=True)["events"]:
            if e["message"].startswith("PIPE-BENCH "):
                _, n, secs = e["message"].split()
                return int(n), float(secs)
    raise RuntimeError("the job printed no PIPE-BENCH line")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--objects", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--runtime-python", default=os.path.expanduser(
        os.path.join(os.environ.get("CLARY_RUNTIMES_DIR", "~/.cache/clary/runtimes"), "mxnet-1.9/bin/python")))
    a = p.parse_args()
    sm, s3, logs = boto3.client("sagemaker"), boto3.client("s3"), boto3.client("logs")
    bucket = "bench-pipe-" + uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=bucket)
    size = (a.mib << 20) // a.objects
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i in range(a.objects):
            path = os.path.join(d, "part-%04d" % i)
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            s3.upload_file(path, bucket, "data/part-%04d" % i)
            files.append(path)
        reader = os.path.join(d, "reader.py")
        open(reader, "w").write(READER)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo("read.py")
            info.size = len(READER)
            t.addfile(info, io.BytesIO(READER.encode()))
        s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=buf.getvalue())

        cat_rates, fifo_rates = [], []
        for i in range(a.runs):
            # Anchor: cat into a pipe, the same reader on /dev/stdin.
            cat = subprocess.Popen(["cat", *files], stdout=subprocess.PIPE)
            out = subprocess.run([a.runtime_python, reader, "/dev/stdin"], stdin=cat.stdout,
                                 capture_output=True, text=True, check=True).stdout
            cat.wait()
            _, n, secs = out.split()
            cat_rates.append(int(n) / float(secs) / 1e6)

            job = "bench-pipe-%s-%d" % (uuid.uuid4().hex[:8], i)
            sm.create_training_job(
                TrainingJobName=job,
                AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "Pipe"},
                RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
                OutputDataConfig={"S3OutputPath": "s3://%s/out" % bucket},
                ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
                StoppingCondition={"MaxRuntimeInSeconds": 600},
                InputDataConfig=[{"ChannelName": "bench", "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": "s3://%s/data/" % bucket}}}],
                HyperParameters={"sagemaker_program": '"read.py"',
                                 "sagemaker_submit_directory": '"s3://%s/code/sourcedir.tar.gz"' % bucket})
            while True:
                desc = sm.describe_training_job(TrainingJobName=job)
                if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                    break
                time.sleep(0.05)
            assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
            n, secs = job_seconds(logs, job)
            assert n == size * a.objects, (n, size * a.objects)
            fifo_rates.append(n / secs / 1e6)

    c, f = statistics.median(cat_rates), statistics.median(fifo_rates)
    print("channel           %d MiB in %d objects, %d runs" % (a.mib, a.objects, a.runs))
    print("cat | pipe        median %8.0f MB/s  (max %.0f)" % (c, max(cat_rates)))
    print("clary Pipe FIFO   median %8.0f MB/s  (max %.0f)" % (f, max(fifo_rates)))
    print("ratio fifo/cat    %.2f" % (f / c))


if __name__ == "__main__":
    sys.exit(main())
