"""The SageMaker Python SDK v2, unchanged, against Clary: fit the example, then in parallel
`estimator.deploy` (2 instances) and `MXNetModel(...).deploy`, predict with the default, CSV and
NPY serializers, compare with the model run in-process, and delete. Run with the environment
`clary env` prints; prints one JSON line of findings for the test to check."""
import concurrent.futures
import json
import os
import sys
import tarfile
import tempfile

import mxnet as mx
import numpy as np
import sagemaker
from sagemaker.deserializers import CSVDeserializer, NumpyDeserializer
from sagemaker.mxnet import MXNet, MXNetModel
from sagemaker.serializers import CSVSerializer, NumpySerializer

example, data_dir, inference_dir = sys.argv[1:4]
session = sagemaker.Session()
bucket = session.default_bucket()
train = session.upload_data(os.path.join(data_dir, "train"), bucket, "sdk-deploy/train")
test = session.upload_data(os.path.join(data_dir, "test"), bucket, "sdk-deploy/test")

est = MXNet(entry_point="train.py", source_dir=example, role="SageMakerRole", instance_count=1,
            instance_type="ml.c5.xlarge", framework_version="1.9.0", py_version="py38",
            hyperparameters={"epochs": 1, "learning-rate": 0.1})
est.fit({"train": train, "test": test}, wait=True, logs=False)
model_data = est.model_data

# The model in-process, from the real model.tar.gz, for the reference predictions.
local = tempfile.mkdtemp()
sagemaker.s3.S3Downloader.download(model_data, local)
with tarfile.open(os.path.join(local, "model.tar.gz")) as t:
    t.extractall(local)
sym, args, aux = mx.model.load_checkpoint(os.path.join(local, "model"), 0)
rows = np.random.RandomState(3).rand(4, 1, 28, 28).astype("float32")
mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
mod.bind(for_training=False, data_shapes=[("data", rows.shape)])
mod.set_params(args, aux)
want = mod.predict(mx.io.NDArrayIter(mx.nd.array(rows), batch_size=4)).asnumpy()


def from_estimator():
    predictor = est.deploy(initial_instance_count=2, instance_type="ml.m5.large")
    out = {"default": np.array(predictor.predict(rows)).tolist()}
    predictor.serializer, predictor.deserializer = CSVSerializer(), CSVDeserializer()
    out["csv"] = predictor.predict(rows.reshape(4, -1))
    predictor.serializer, predictor.deserializer = NumpySerializer(), NumpyDeserializer()
    out["npy"] = predictor.predict(rows).tolist()
    desc = session.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
    out["instances"] = desc["ProductionVariants"][0]["CurrentInstanceCount"]
    predictor.delete_model()
    predictor.delete_endpoint()
    out["endpoint"] = predictor.endpoint_name
    return out


def from_model():
    model = MXNetModel(model_data=model_data, role="SageMakerRole", entry_point="inference.py",
                       source_dir=inference_dir, framework_version="1.9.0", py_version="py38")
    predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large")
    out = {"custom": predictor.predict(rows.tolist())}
    predictor.delete_model()
    predictor.delete_endpoint()
    return out


with concurrent.futures.ThreadPoolExecutor(2) as pool:
    a, b = pool.submit(from_estimator), pool.submit(from_model)
    result = {"want": want.tolist(), **a.result(), **b.result()}
print(json.dumps(result))
