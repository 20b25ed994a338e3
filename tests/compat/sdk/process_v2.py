"""The SageMaker Python SDK v2's processors, unchanged, against Clary. One scenario per run
(argv[1]); prints one JSON line of findings last for the test to check.

  framework  FrameworkProcessor(MXNet, '1.9.0').run(code, source_dir with requirements.txt,
             dependencies, inputs, outputs, arguments, wait=True, logs=True); its output is
             the train channel of an MXNet estimator's fit
  script     ScriptProcessor(image_uri=<mxnet-training>, command=['python3'], 2 instances,
             env).run with a ShardedByS3Key input, a Pipe input of gzip objects, a Continuous
             output and an EndOfJob one
"""
import gzip
import hashlib
import json
import os
import sys
import time

import sagemaker
from sagemaker.mxnet import MXNet
from sagemaker.processing import FrameworkProcessor, ProcessingInput, ProcessingOutput, ScriptProcessor
from sagemaker.s3 import S3Downloader, S3Uploader

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
scenario = sys.argv[1]
session = sagemaker.Session()
bucket = session.default_bucket()
sm = session.sagemaker_client
stamp = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 10**8)
out = {}

if scenario == "framework":
    raw = "s3://%s/proc-raw-%s" % (bucket, stamp)
    rows = "".join("%d,%d\n" % (i, 3 * i) for i in range(1, 21))
    S3Uploader.upload_string_as_file_body(rows, raw + "/part-0.csv")
    proc = FrameworkProcessor(MXNet, "1.9.0", py_version="py38", role=ROLE, instance_count=1,
                              instance_type="ml.c5.xlarge", base_job_name="sdk-fw")
    proc.run(code="prep.py", source_dir=os.path.join(HERE, "processing"),
             dependencies=[os.path.join(HERE, "deps", "sdkhelpers")],
             inputs=[ProcessingInput(source=raw, destination="/opt/ml/processing/input/raw")],
             outputs=[ProcessingOutput(source="/opt/ml/processing/train", output_name="train")],
             arguments=["--scale", "0.5"], wait=True, logs=True)
    job = proc.latest_job.describe()
    out["job"] = job["ProcessingJobName"]
    out["describe"] = job
    out["raw_after"] = S3Downloader.read_file(raw + "/part-0.csv")
    train_uri = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    est = MXNet(entry_point="train.py", source_dir=os.path.join(HERE, "processing_train"), role=ROLE,
                instance_count=1, instance_type="ml.c5.xlarge", framework_version="1.9.0",
                py_version="py38", output_path="s3://%s/proc-model" % bucket)
    est.fit({"train": train_uri}, wait=True, logs=False, job_name="sdk-fit-" + stamp)
    out["training_job"] = est.latest_training_job.name
elif scenario == "script":
    shards = "s3://%s/proc-shards-%s" % (bucket, stamp)
    for i in range(4):
        S3Uploader.upload_string_as_file_body("shard %d\n" % i, "%s/s-%d.txt" % (shards, i))
    stream = "s3://%s/proc-stream-%s" % (bucket, stamp)
    plain = b"".join(b"record %d\n" % i for i in range(5000))
    local = os.path.join(os.environ.get("TMPDIR", "/tmp"), "stream-%s.gz" % stamp)
    with gzip.open(local, "wb") as f:
        f.write(plain)
    S3Uploader.upload(local, stream)
    out["expected_sha256"] = hashlib.sha256(plain).hexdigest()
    image = sagemaker.image_uris.retrieve("mxnet", session.boto_region_name, version="1.9.0",
                                          py_version="py38", instance_type="ml.c5.xlarge",
                                          image_scope="training")
    proc = ScriptProcessor(image_uri=image, command=["python3"], role=ROLE, instance_count=2,
                           instance_type="ml.c5.xlarge", env={"PROC_FLAVOUR": "script"},
                           max_runtime_in_seconds=600, base_job_name="sdk-script")
    progress = "s3://%s/proc-progress-%s" % (bucket, stamp)
    proc.run(code=os.path.join(HERE, "processing", "prep.py"),
             inputs=[ProcessingInput(source=shards, destination="/opt/ml/processing/input/shards",
                                     s3_data_distribution_type="ShardedByS3Key"),
                     ProcessingInput(source=stream, destination="/opt/ml/processing/input/stream",
                                     s3_input_mode="Pipe", s3_compression_type="Gzip")],
             outputs=[ProcessingOutput(source="/opt/ml/processing/report", output_name="report"),
                      ProcessingOutput(source="/opt/ml/processing/progress", output_name="progress",
                                       destination=progress, s3_upload_mode="Continuous")],
             arguments=["--mode", "script", "--sleep", "4"], wait=False, logs=False)
    name = proc.latest_job.job_name
    # Continuous: each host's file is in S3 while the job still runs.
    deadline = time.time() + 120
    early = []
    while time.time() < deadline:
        status = sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"]
        early = sorted(S3Downloader.list(progress))
        if len(early) == 2 or status != "InProgress":
            break
        time.sleep(0.3)
    out["early"] = [u.rsplit("/", 1)[1] for u in early]
    out["status_when_early"] = status
    proc.latest_job.wait(logs=True)
    job = proc.latest_job.describe()
    out["job"] = name
    out["describe"] = job
    report_uri = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    out["reports"] = {u.rsplit("/", 1)[1]: json.loads(S3Downloader.read_file(u))
                      for u in S3Downloader.list(report_uri)}
print(json.dumps(out, default=str))
