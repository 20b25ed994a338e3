"""The SageMaker Python SDK v2's MXNet estimator, unchanged, against Clary. One scenario per
run (argv[1]); prints one JSON line of findings last for the test to check.

  logs    fit({'train', 'test'}, wait=True, logs=True) with every JSON hyperparameter type,
          a requirements.txt, a dependencies folder and a role name; S3Downloader fetches
          model_data
  attach  fit('s3://…', wait=False) with a role ARN, MXNet.attach while it runs, then
          latest_training_job.wait(), then attach on the finished job
  fail    a script that raises: fit raises UnexpectedStatusException with our FailureReason
  dist    instance_count=2 with the parameter server, a ShardedByS3Key TrainingInput next to a
          replicated one, and checkpoint_s3_uri
  pipe    input_mode='Pipe' with a Gzip channel and a File-mode channel beside it
"""
import gzip
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import time

import sagemaker
from sagemaker.inputs import TrainingInput
from sagemaker.mxnet import MXNet
from sagemaker.s3 import S3Downloader, S3Uploader

HERE = os.path.dirname(os.path.abspath(__file__))
scenario, data_dir = sys.argv[1], sys.argv[2]
session = sagemaker.Session()
bucket = session.default_bucket()
sm = session.sagemaker_client
stamp = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 10**8)
out = {}


def estimator(**kw):
    args = dict(entry_point="train.py", source_dir=os.path.join(HERE, "script"),
                dependencies=[os.path.join(HERE, "deps", "sdkhelpers")], role="SageMakerRole",
                instance_count=1, instance_type="ml.c5.xlarge", framework_version="1.9.0",
                py_version="py38", output_path="s3://%s/sdk-out" % bucket, max_run=600,
                input_mode="File")
    args.update(kw)
    return MXNet(**args)


def upload(channel):
    return S3Uploader.upload(os.path.join(data_dir, channel), "s3://%s/sdk-data-%s/%s" % (bucket, stamp, channel))


if scenario == "logs":
    hps = {"int": 3, "float": 0.25, "str": "two words", "bool": True, "list": [1, "x", None],
           "dict": {"k": [1, 2], "nested": {"deep": False}}, "none": None, "unicode": "héllo"}
    est = estimator(hyperparameters=dict(hps))  # the SDK adds its sagemaker_* keys in place
    job = "sdk-logs-" + stamp
    est.fit({"train": upload("train"), "test": upload("test")}, wait=True, logs=True, job_name=job)
    out["job"] = job
    out["model_data"] = est.model_data
    local = tempfile.mkdtemp()
    S3Downloader.download(est.model_data, local)
    with tarfile.open(os.path.join(local, "model.tar.gz")) as t:
        out["model_files"] = sorted(t.getnames())
        out["saved_hps"] = json.load(t.extractfile("hps.json"))
    out["sent_hps"] = hps
    out["stored_hps"] = sm.describe_training_job(TrainingJobName=job)["HyperParameters"]

elif scenario == "attach":
    est = estimator(role="arn:aws:iam::123456789012:role/SageMakerRole", hyperparameters={"sleep": 12, "lr": 0.1})
    est.fit(upload("train").rsplit("/", 1)[0], wait=False)
    job = est.latest_training_job.name
    out["job"] = job
    out["status_before_attach"] = sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"]
    t0 = time.time()
    attached = MXNet.attach(job)
    out["attach_seconds"] = time.time() - t0
    out["status_after_attach"] = sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"]
    est.latest_training_job.wait()
    for name, e in (("attached", attached), ("finished", MXNet.attach(job))):
        out[name] = {"hyperparameters": e.hyperparameters(), "entry_point": e.entry_point,
                     "framework_version": e.framework_version, "py_version": e.py_version,
                     "model_data": e.model_data, "role": e.role, "source_dir": e.source_dir}
    out["model_data"] = est.model_data
    out["channels"] = [c["ChannelName"] for c in sm.describe_training_job(TrainingJobName=job)["InputDataConfig"]]

elif scenario == "fail":
    est = estimator(hyperparameters={"fail": True})
    try:
        est.fit({"train": upload("train")}, logs=True)
        out["raised"] = None
    except sagemaker.exceptions.UnexpectedStatusException as e:
        out["raised"] = type(e).__name__
        out["message"] = str(e)
    job = est.latest_training_job.name
    out["failure_reason"] = sm.describe_training_job(TrainingJobName=job)["FailureReason"]

elif scenario == "dist":
    shards = "s3://%s/sdk-shards-%s" % (bucket, stamp)
    for i in range(6):
        S3Uploader.upload_string_as_file_body("part %d" % i, "%s/part-%d.txt" % (shards, i))
    checkpoints = "s3://%s/sdk-checkpoints-%s" % (bucket, stamp)
    est = estimator(source_dir=os.path.join(HERE, "modes"), dependencies=[], instance_count=2,
                    distribution={"parameter_server": {"enabled": True}}, checkpoint_s3_uri=checkpoints)
    est.fit({"sharded": TrainingInput(shards, distribution="ShardedByS3Key"),
             "replicated": TrainingInput(shards)}, logs=False)
    job = est.latest_training_job.name
    out["job"] = job
    out["checkpoints"] = sorted(S3Downloader.list(checkpoints))
    out["describe"] = {k: v for k, v in sm.describe_training_job(TrainingJobName=job).items()
                       if k in ("CheckpointConfig", "HyperParameters", "ResourceConfig", "InputDataConfig",
                                "TrainingJobStatus")}

elif scenario == "pipe":
    prefix = "s3://%s/sdk-pipe-%s" % (bucket, stamp)
    local = tempfile.mkdtemp()
    for i in range(3):
        with open(os.path.join(local, "part-%d.gz" % i), "wb") as f:
            f.write(gzip.compress(("line %d\n" % i).encode() * 500))
    S3Uploader.upload(local, prefix + "/gz")
    files = upload("test")
    est = estimator(source_dir=os.path.join(HERE, "modes"), dependencies=[], input_mode="Pipe")
    est.fit({"stream": TrainingInput(prefix + "/gz", compression="Gzip"),
             "files": TrainingInput(files, input_mode="File")}, logs=False)
    job = est.latest_training_job.name
    out["job"] = job
    out["expected"] = hashlib.sha256("".join(("line %d\n" % i) * 500 for i in range(3)).encode()).hexdigest()
    out["describe"] = {k: v for k, v in sm.describe_training_job(TrainingJobName=job).items()
                       if k in ("AlgorithmSpecification", "InputDataConfig", "TrainingJobStatus")}

print(json.dumps(out, default=str))
