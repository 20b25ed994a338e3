"""The SageMaker Python SDK v2, unchanged, against Clary's batch transform: fit the example, then
`estimator.transformer(...).transform(...)` with filters, join, model_client_config, wait and
logs; `MXNetModel(...).transformer(...)` running two jobs; `Transformer.attach`; a stopped job.
Compares the predictions with the model run in-process. Run with the environment `clary env`
prints; prints one JSON line of findings for the test to check."""
import concurrent.futures
import json
import os
import sys
import tarfile
import tempfile

import mxnet as mx
import numpy as np
import sagemaker
from sagemaker.mxnet import MXNet, MXNetModel
from sagemaker.transformer import Transformer

example, data_dir = sys.argv[1:3]
session = sagemaker.Session()
bucket = session.default_bucket()
s3 = session.boto_session.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
train = session.upload_data(os.path.join(data_dir, "train"), bucket, "sdk-transform/train")
test = session.upload_data(os.path.join(data_dir, "test"), bucket, "sdk-transform/test")

est = MXNet(entry_point="train.py", source_dir=example, role="SageMakerRole", instance_count=1,
            instance_type="ml.c5.xlarge", framework_version="1.9.0", py_version="py38",
            hyperparameters={"epochs": 1, "learning-rate": 0.1})
est.fit({"train": train, "test": test}, wait=True, logs=False)

# The model in-process, from the real model.tar.gz, for the reference predictions.
local = tempfile.mkdtemp()
sagemaker.s3.S3Downloader.download(est.model_data, local)
with tarfile.open(os.path.join(local, "model.tar.gz")) as t:
    t.extractall(local)
sym, args, aux = mx.model.load_checkpoint(os.path.join(local, "model"), 0)
rows = np.random.RandomState(5).rand(40, 784).astype("float32")
mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
mod.bind(for_training=False, data_shapes=[("data", (40, 1, 28, 28))])
mod.set_params(args, aux)
want = mod.predict(mx.io.NDArrayIter(mx.nd.array(rows.reshape(40, 1, 28, 28)), batch_size=40)).asnumpy()

# Input: an ID column then the 784 pixels, over two objects.
csv = ["r%d,%s" % (i, ",".join("%.6f" % v for v in r)) for i, r in enumerate(rows)]
for name, part in (("a.csv", csv[:25]), ("b.csv", csv[25:])):
    s3.put_object(Bucket=bucket, Key="sdk-transform/input/" + name, Body=("\n".join(part) + "\n").encode())
data = "s3://%s/sdk-transform/input/" % bucket


def outputs(transformer):
    prefix = transformer.output_path.split("/", 3)[3]
    out = {}
    for name in ("a.csv", "b.csv"):
        body = s3.get_object(Bucket=bucket, Key="%s/%s.out" % (prefix, name))["Body"].read().decode()
        out[name] = body.splitlines()
    return out


def with_logs():
    """estimator.transformer with join and filters, the logs streamed (the SDK's log loop
    looks at the job every 30 s, so this runs beside the rest)."""
    t1 = est.transformer(instance_count=2, instance_type="ml.m5.large", strategy="MultiRecord",
                         assemble_with="Line", accept="text/csv", max_payload=1,
                         output_path="s3://%s/sdk-transform/out1" % bucket)
    t1.transform(data, content_type="text/csv", split_type="Line", input_filter="$[1:]",
                 output_filter="$[0,-10:]", join_source="Input",
                 model_client_config={"InvocationsTimeoutInSeconds": 60, "InvocationsMaxRetries": 1},
                 wait=True, logs=True)
    out = {"joined": outputs(t1), "t1_job": t1.latest_transform_job.job_name}
    # Transformer.attach to the finished job.
    attached = Transformer.attach(t1.latest_transform_job.job_name)
    out["attached"] = {"model_name": attached.model_name, "instance_count": attached.instance_count,
                       "strategy": attached.strategy, "assemble_with": attached.assemble_with,
                       "output_path": attached.output_path, "max_payload": attached.max_payload,
                       "accept": attached.accept}
    return out


def from_model():
    """MXNetModel(...).transformer running two jobs (without the ID column, JSON answers), then
    a third started without waiting and stopped through the SDK."""
    model = MXNetModel(model_data=est.model_data, role="SageMakerRole", entry_point="train.py",
                       source_dir=example, framework_version="1.9.0", py_version="py38")
    t2 = model.transformer(instance_count=1, instance_type="ml.m5.large", accept="application/json",
                           assemble_with="Line", output_path="s3://%s/sdk-transform/out2" % bucket)
    out = {"plain": [], "t2_jobs": []}
    for _ in range(2):
        t2.transform(data, content_type="text/csv", split_type="Line", input_filter="$[1:]",
                     wait=True, logs=False)
        out["t2_jobs"].append(t2.latest_transform_job.job_name)
        out["plain"].append(outputs(t2))
    t2.transform(data, content_type="text/csv", split_type="Line", wait=False)
    t2.stop_transform_job(wait=True)
    desc = session.sagemaker_client.describe_transform_job(TransformJobName=t2.latest_transform_job.job_name)
    out["stopped"] = desc["TransformJobStatus"]
    return out


with concurrent.futures.ThreadPoolExecutor(2) as pool:
    a, b = pool.submit(with_logs), pool.submit(from_model)
    result = {"want": want.tolist(), **a.result(), **b.result()}
print(json.dumps(result))
