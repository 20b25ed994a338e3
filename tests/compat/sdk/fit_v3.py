"""The SageMaker Python SDK v3 (ModelTrainer, ModelBuilder, the sagemaker.core resource classes),
unchanged, against Clary. One scenario per run (argv[1]); prints its findings as one JSON line
after `RESULT ` for the test to check. No role is passed anywhere: the config `clary env` writes names it.

  train  ModelTrainer with SourceCode (a source dir with requirements.txt), hyperparameters, a
         local InputData and an S3 one, train(wait=True, logs=True); the resource classes
         (TrainingJob.get/refresh/wait); ModelBuilder built from the trainer, deploy, invoke on
         the whole test set, then Endpoint.get and delete
  fail   a script that writes /opt/ml/output/failure and exits 3: train(wait=True) raises
         FailedStatusError with the job's FailureReason
"""
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time

import boto3
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"
INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"


class Collected(logging.Handler):
    """The SDK's own log records (logs=True prints the job's log through `logging`)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# What a user does to see the SDK's INFO output, logs=True's job log among it.
logging.basicConfig(level=logging.INFO)
collected = Collected()
logging.getLogger("sagemaker").addHandler(collected)

from sagemaker.core.resources import Endpoint, TrainingJob  # noqa: E402
from sagemaker.core.utils.exceptions import FailedStatusError  # noqa: E402
from sagemaker.serve.model_builder import ModelBuilder  # noqa: E402
from sagemaker.train import ModelTrainer  # noqa: E402
from sagemaker.train.configs import Compute, InputData, SourceCode, StoppingCondition  # noqa: E402

scenario, data_dir = sys.argv[1], sys.argv[2]
stamp = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 10**8)
s3 = boto3.client("s3")
out = {}


def source_dir():
    """The training code as a user keeps it: the script, the example it runs, requirements."""
    d = tempfile.mkdtemp()
    for name in ("train.py", "requirements.txt"):
        shutil.copy(os.path.join(HERE, "v3", name), d)
    shutil.copy(os.path.join(ROOT, "examples", "mnist", "train.py"), os.path.join(d, "mnist_train.py"))
    return d


def trainer(**hyperparameters):
    return ModelTrainer(
        training_image=IMAGE,
        source_code=SourceCode(source_dir=source_dir(), entry_script="train.py",
                               requirements="requirements.txt"),
        compute=Compute(instance_type="ml.c5.xlarge", instance_count=1),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=600),
        hyperparameters=hyperparameters,
        base_job_name="v3-%s" % scenario)


def facts(lines):
    line = next(l for l in lines if "V3-FACTS " in l)
    return json.loads(line[line.index("V3-FACTS ") + len("V3-FACTS "):])


if scenario == "train":
    bucket = trainer().sagemaker_session.default_bucket()
    test_prefix = "v3-data-%s/test" % stamp
    for name in os.listdir(os.path.join(data_dir, "test")):
        s3.upload_file(os.path.join(data_dir, "test", name), bucket, "%s/%s" % (test_prefix, name))
    mt = trainer(epochs=3, **{"learning-rate": 0.1})
    mt.train(input_data_config=[
        InputData(channel_name="train", data_source=os.path.join(data_dir, "train")),
        InputData(channel_name="test", data_source="s3://%s/%s" % (bucket, test_prefix)),
    ], wait=True, logs=True)
    name = mt._latest_training_job.training_job_name
    logged = "\n".join(collected.messages).splitlines()
    out["facts"] = facts(logged)
    out["accuracy_logged"] = float(next(l for l in logged if l.startswith("final test accuracy:")).split(":")[1])

    job = TrainingJob.get(training_job_name=name)
    job.refresh()
    job.wait(poll=1)  # already Completed: returns at once
    spec = job.algorithm_specification
    out["job"] = {"name": name, "status": job.training_job_status, "role": job.role_arn,
                  "entrypoint": spec.container_entrypoint, "arguments": spec.container_arguments,
                  "channels": sorted(c.channel_name for c in job.input_data_config),
                  "hyperparameters": job.hyper_parameters,
                  "model_data": job.model_artifacts.s3_model_artifacts}
    model_bucket, model_key = out["job"]["model_data"][len("s3://"):].split("/", 1)
    body = s3.get_object(Bucket=model_bucket, Key=model_key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        out["model_files"] = sorted(t.getnames())
        out["written_at_opt_ml"] = t.extractfile("written-at-opt-ml.txt").read().decode()
    # The drivers the SDK uploaded, as stored: the job's `chmod +x` must not have reached them.
    drivers = job.input_data_config
    sm_drivers = next(c for c in drivers if c.channel_name == "sm_drivers").data_source.s3_data_source.s3_uri
    d_bucket, d_prefix = sm_drivers[len("s3://"):].split("/", 1)
    out["stored_driver"] = {"bucket": d_bucket, "key": d_prefix.rstrip("/") + "/sm_train.sh"}
    out["stored_driver"]["text"] = s3.get_object(**{"Bucket": d_bucket, "Key": out["stored_driver"]["key"]})["Body"].read().decode()

    # Hosting what it trained: ModelBuilder from the trainer, deploy, invoke, delete.
    mb = ModelBuilder(model=mt, image_uri=INFERENCE_IMAGE, instance_type="ml.m5.large")
    mb.build(model_name="v3-model-%s" % stamp)
    endpoint = mb.deploy(endpoint_name="v3-ep-%s" % stamp, initial_instance_count=1,
                         instance_type="ml.m5.large")
    images = np.load(os.path.join(data_dir, "test", "images.npy"))
    labels = np.load(os.path.join(data_dir, "test", "labels.npy"))
    predicted = []
    for start in range(0, len(images), 100):
        batch = images[start:start + 100].astype("float32")
        r = endpoint.invoke(body=json.dumps(batch.tolist()), content_type="application/json",
                            accept="application/json")
        predicted += np.argmax(np.array(json.loads(r.body.read())), axis=1).tolist()
    out["served_accuracy"] = float(np.mean(np.array(predicted) == labels.reshape(-1)[:len(predicted)]))
    out["served_rows"] = len(predicted)
    got = Endpoint.get(endpoint_name=endpoint.endpoint_name)
    out["endpoint_status"] = got.endpoint_status
    got.delete()
    for _ in range(300):
        if not [e for e in Endpoint.get_all() if e.endpoint_name == endpoint.endpoint_name]:
            break
        time.sleep(0.2)
    out["endpoint_deleted"] = not [e for e in Endpoint.get_all() if e.endpoint_name == endpoint.endpoint_name]

elif scenario == "fail":
    mt = trainer(fail=True)
    try:
        mt.train(wait=True, logs=False)
        out["raised"] = None
    except FailedStatusError as e:
        out["raised"] = {"type": type(e).__name__, "text": str(e)}
    job = TrainingJob.get(training_job_name=mt._latest_training_job.training_job_name)
    out["job"] = {"name": job.training_job_name, "status": job.training_job_status,
                  "failure_reason": job.failure_reason}

print("RESULT " + json.dumps(out), flush=True)
