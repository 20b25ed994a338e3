"""The SageMaker Python SDK v1 (1.72) against Clary. Prints one JSON line of findings last.

1. The seed README's own example as written (framework_version='1.2.1', default py2, a GPU
   instance type) with a legacy train() script: fit, then deploy with the default model_fn
   (the code comes from the submit directory, as for every pre-1.4 image), predict, delete.
2. Script mode on 1.3.0 (a real MXNet 1.3.0 runtime): fit with logs, attach to the finished
   job, deploy, predict, delete.

v1 has no config file, so its Session is given the bucket (docs/sdk-wire.md §2.1: default_bucket()
would otherwise call the real STS).
"""
import json
import os
import sys

import boto3
import numpy as np
import sagemaker
from sagemaker.mxnet import MXNet

example, legacy_dir, data_dir, bucket = sys.argv[1:5]
boto3.client("s3").create_bucket(Bucket=bucket)
session = sagemaker.Session(default_bucket=bucket)
out = {}

# 1. The seed's example, with a legacy script.
train = session.upload_data(os.path.join(data_dir, "train"), bucket, "v1/train")
test = session.upload_data(os.path.join(data_dir, "test"), bucket, "v1/test")
mxnet_estimator = MXNet('train.py', role='SageMakerRole', train_instance_type='ml.p3.2xlarge',
                        train_instance_count=1, framework_version='1.2.1', source_dir=legacy_dir,
                        hyperparameters={'epochs': 10, 'learning_rate': 0.3}, sagemaker_session=session)
mxnet_estimator.fit({'train': train, 'test': test})
legacy_job = mxnet_estimator.latest_training_job.name
legacy_desc = session.sagemaker_client.describe_training_job(TrainingJobName=legacy_job)
out["legacy"] = {"job": legacy_job, "status": legacy_desc["TrainingJobStatus"],
                 "image": legacy_desc["AlgorithmSpecification"]["TrainingImage"]}
model_bucket, model_key = mxnet_estimator.model_data[len("s3://"):].split("/", 1)
import io
import tarfile
body = boto3.client("s3").get_object(Bucket=model_bucket, Key=model_key)["Body"].read()
with tarfile.open(fileobj=io.BytesIO(body)) as t:
    out["legacy"]["model_files"] = sorted(t.getnames())
legacy_predictor = mxnet_estimator.deploy(initial_instance_count=1, instance_type='ml.m5.large')
legacy_rows = np.random.RandomState(7).rand(2, 1, 28, 28).astype("float32")
out["legacy"]["prediction"] = np.array(legacy_predictor.predict(legacy_rows.tolist())).tolist()
legacy_predictor.delete_endpoint()
legacy_predictor.delete_model()

# 2. Script mode on 1.3.0.
est = MXNet(entry_point="train.py", source_dir=example, role="SageMakerRole",
            train_instance_type="ml.c5.xlarge", train_instance_count=1, framework_version="1.3.0",
            py_version="py3", hyperparameters={"epochs": 1, "learning-rate": 0.1},
            sagemaker_session=session)
est.fit({"train": train, "test": test}, logs=True)
job = est.latest_training_job.name
desc = session.sagemaker_client.describe_training_job(TrainingJobName=job)
out["job"] = job
out["status"] = desc["TrainingJobStatus"]
out["image"] = desc["AlgorithmSpecification"]["TrainingImage"]
out["model_data"] = est.model_data
attached = MXNet.attach(job, sagemaker_session=session)
out["attached"] = {"hyperparameters": attached.hyperparameters(), "framework_version": attached.framework_version,
                   "entry_point": attached.entry_point}
predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large")
rows = np.random.RandomState(5).rand(2, 1, 28, 28).astype("float32")
out["prediction"] = np.array(predictor.predict(rows.tolist())).tolist()
predictor.delete_endpoint()
predictor.delete_model()
out["endpoint"] = predictor.endpoint
print(json.dumps(out))
