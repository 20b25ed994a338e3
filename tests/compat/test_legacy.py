"""Legacy train() mode (framework_version 1.2 and earlier, docs/contract.md §7.2) on real MXNet:
the script is imported and train() called with the legacy keyword arguments, the model saved
by the script's save() or the default Module save, and the result deployed."""
import io
import json
import os
import tarfile

import numpy as np

from conftest import tagged, ROLE, job_request, log_text, unique, upload_code, wait_endpoint, wait_for
from test_training import upload_dir

LEGACY_IMAGE = "520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-mxnet:1.2.1-cpu-py3"

# Learns y = argmax over 4 fixed directions of x: easy, so the deployed model is checkable.
MODULE_SCRIPT = r'''
import json
import os
import logging
import mxnet as mx
import numpy as np

def train(hyperparameters, channel_input_dirs, num_gpus, hosts, current_host):
    x = np.load(os.path.join(channel_input_dirs["train"], "x.npy"))
    y = np.load(os.path.join(channel_input_dirs["train"], "y.npy"))
    it = mx.io.NDArrayIter(x, y, batch_size=hyperparameters["batch_size"], shuffle=True, label_name="softmax_label")
    data = mx.sym.Variable("data")
    net = mx.sym.FullyConnected(data, num_hidden=4)
    net = mx.sym.SoftmaxOutput(net, name="softmax")
    mod = mx.mod.Module(net, context=mx.cpu())
    mod.fit(it, num_epoch=hyperparameters["epochs"], optimizer="sgd",
            optimizer_params={"learning_rate": 0.5}, initializer=mx.init.Xavier())
    print("LEGACY-ARGS " + json.dumps({"hps": hyperparameters, "num_gpus": num_gpus, "hosts": hosts,
                                       "current_host": current_host}))
    return mod
'''

CUSTOM_SAVE_SCRIPT = MODULE_SCRIPT + r'''

def save(model, model_dir):
    # Legacy order: the model first.
    model.save_checkpoint(os.path.join(model_dir, "custom"), 7)
    with open(os.path.join(model_dir, "saved-by.txt"), "w") as f:
        f.write("script save " + type(model).__name__)
'''

GLUON_SCRIPT = r'''
import os
import mxnet as mx
from mxnet import gluon

def train(**kwargs):
    net = gluon.nn.Dense(3)
    net.initialize()
    net(mx.nd.ones((1, 5)))
    return net

def save(net, model_dir):
    net.save_parameters(os.path.join(model_dir, "dense.params"))
'''

GLUON_NO_SAVE_SCRIPT = r'''
import mxnet as mx
from mxnet import gluon

def train(**kwargs):
    net = gluon.nn.Dense(3)
    net.initialize()
    return net
'''

KWARGS_SCRIPT = r'''
import json
import os

def train(hyperparameters, num_gpus, **kwargs):
    out = {"hyperparameters": hyperparameters, "num_gpus": num_gpus}
    out.update(kwargs)
    print("LEGACY-KWARGS " + json.dumps(out, sort_keys=True))
    with open(os.path.join(kwargs["output_data_dir"], "kwargs.json"), "w") as f:
        json.dump(out, f)
    return None
'''


def legacy_request(job, bucket, source, hps=None, channels=None):
    req = job_request(job, bucket, source, hps=hps, channels=channels)
    req["AlgorithmSpecification"]["TrainingImage"] = LEGACY_IMAGE
    return req


def model_files(s3, d, tmp_path):
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = uri[len("s3://"):].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(tmp_path)
    return sorted(os.listdir(tmp_path))


def data_channel(s3, bucket, job, tmp_path):
    rng = np.random.RandomState(0)
    centers = np.eye(4, 8, dtype="float32") * 3
    y = rng.randint(0, 4, size=400)
    x = (centers[y] + rng.normal(0, 0.3, size=(400, 8))).astype("float32")
    os.makedirs(tmp_path / "train", exist_ok=True)
    np.save(tmp_path / "train" / "x.npy", x)
    np.save(tmp_path / "train" / "y.npy", y.astype("float32"))
    return {"train": upload_dir(s3, bucket, str(tmp_path / "train"), "data/%s/train" % job)}, centers


def test_module_default_save_then_deploys_with_the_default_model_fn(sm, s3, rt, logs, bucket, tmp_path):
    job = unique("legacy-mod")
    source = upload_code(s3, bucket, job, {"train.py": MODULE_SCRIPT})
    channels, centers = data_channel(s3, bucket, job, tmp_path)
    sm.create_training_job(**legacy_request(job, bucket, source, hps={"batch_size": "20", "epochs": "10"},
                                            channels=channels))
    d = wait_for(sm, job, timeout=300)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert model_files(s3, d, tmp_path / "model") == ["model-0000.params", "model-shapes.json", "model-symbol.json"]
    shapes = json.load(open(tmp_path / "model" / "model-shapes.json"))
    assert shapes == [{"name": "data", "shape": [20, 8]}]
    # The yellow warning, and the arguments: only those train() names, all hyperparameters decoded.
    assert "\x1b[1;33m" in text and "legacy train() structure" in text
    args = tagged(text, "LEGACY-ARGS")
    assert args["hps"]["batch_size"] == 20 and args["hps"]["sagemaker_program"] == "train.py"
    assert args["hps"]["sagemaker_job_name"] == job
    assert args["num_gpus"] == 0 and args["hosts"] == ["algo-1"] and args["current_host"] == "algo-1"
    # The parameter server runs even on one host, as the legacy container did.
    assert "parameter server scheduler on algo-1" in text

    # Deploy it the way the SDK v1 does for 1.2.1: the code comes from the submit directory.
    name = unique("legacy-ep")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": LEGACY_IMAGE.replace("1.2.1-cpu-py3", "1.2.1-cpu-py2"),
        "ModelDataUrl": d["ModelArtifacts"]["S3ModelArtifacts"],
        "Environment": {"SAGEMAKER_PROGRAM": "train.py", "SAGEMAKER_SUBMIT_DIRECTORY": source,
                        "SAGEMAKER_REGION": "us-east-1"}})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Accept="application/json",
                           Body=json.dumps(centers.tolist()))
    probs = np.array(json.loads(r["Body"].read()))
    assert probs.shape == (4, 4)
    assert list(probs.argmax(axis=1)) == [0, 1, 2, 3], probs
    sm.delete_endpoint(EndpointName=name)


def test_custom_save_and_a_gluon_net_with_its_own_save(sm, s3, logs, bucket, tmp_path):
    jobs = {}
    channels, _ = data_channel(s3, bucket, "legacy-shared-" + unique("d"), tmp_path)
    for tag, script in (("custom", CUSTOM_SAVE_SCRIPT), ("gluon", GLUON_SCRIPT), ("nosave", GLUON_NO_SAVE_SCRIPT)):
        job = unique("legacy-" + tag)
        source = upload_code(s3, bucket, job, {"train.py": script})
        sm.create_training_job(**legacy_request(job, bucket, source, hps={"batch_size": "50", "epochs": "1"},
                                                channels=channels))
        jobs[tag] = job
    custom = wait_for(sm, jobs["custom"], timeout=300)
    assert custom["TrainingJobStatus"] == "Completed", custom.get("FailureReason")
    files = model_files(s3, custom, tmp_path / "custom")
    assert files == ["custom-0007.params", "custom-symbol.json", "saved-by.txt"], files
    assert open(tmp_path / "custom" / "saved-by.txt").read() == "script save Module"
    gluon = wait_for(sm, jobs["gluon"], timeout=300)
    assert gluon["TrainingJobStatus"] == "Completed", gluon.get("FailureReason")
    assert model_files(s3, gluon, tmp_path / "gluon") == ["dense.params"]
    nosave = wait_for(sm, jobs["nosave"], timeout=300)
    assert nosave["TrainingJobStatus"] == "Failed"
    assert "define save(model, model_dir)" in nosave["FailureReason"], nosave["FailureReason"]


def test_train_with_named_arguments_and_kwargs_gets_all_nine(sm, s3, logs, bucket, tmp_path):
    job = unique("legacy-kw")
    source = upload_code(s3, bucket, job, {"train.py": KWARGS_SCRIPT})
    channels, _ = data_channel(s3, bucket, job, tmp_path)
    sm.create_training_job(**legacy_request(job, bucket, source, hps={"lr": "0.5", "opt": '"sgd"'}, channels=channels))
    d = wait_for(sm, job, timeout=300)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    got = tagged(text, "LEGACY-KWARGS")
    assert sorted(got) == sorted(["hyperparameters", "input_data_config", "channel_input_dirs", "output_data_dir",
                                  "model_dir", "num_gpus", "num_cpus", "hosts", "current_host"])
    assert got["hyperparameters"]["lr"] == 0.5 and got["hyperparameters"]["opt"] == "sgd"
    assert got["input_data_config"]["train"]["TrainingInputMode"] == "File"
    assert got["channel_input_dirs"]["train"].endswith("/input/data/train")
    assert got["model_dir"].endswith("/model") and got["output_data_dir"].endswith("/output/data")
    assert got["num_gpus"] == 0 and got["num_cpus"] >= 1
    assert got["hosts"] == ["algo-1"] and got["current_host"] == "algo-1"
    # Nothing returned: no model files, but output data still travels.
    assert "model.tar.gz" in d["ModelArtifacts"]["S3ModelArtifacts"]
    out_key = "output/%s/output/output.tar.gz" % job
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=out_key)["Body"].read())) as tar:
        assert json.load(tar.extractfile("kwargs.json"))["current_host"] == "algo-1"


DIST_SCRIPT = r'''
import json
import os
import mxnet as mx
import numpy as np

def train(channel_input_dirs, hosts, current_host, output_data_dir, **kwargs):
    kv = mx.kv.create("dist_sync")
    print("LEGACY-DIST " + json.dumps({"host": current_host, "num_workers": kv.num_workers, "rank": kv.rank,
                                       "role": os.environ["DMLC_ROLE"], "root": os.environ["DMLC_PS_ROOT_URI"]}))
    x = np.load(os.path.join(channel_input_dirs["train"], "x.npy"))
    y = np.load(os.path.join(channel_input_dirs["train"], "y.npy"))
    it = mx.io.NDArrayIter(x, y, batch_size=40, label_name="softmax_label")
    net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.Variable("data"), num_hidden=4), name="softmax")
    mod = mx.mod.Module(net, context=mx.cpu())
    mod.fit(it, num_epoch=2, kvstore=kv, optimizer="sgd", optimizer_params={"learning_rate": 0.5},
            initializer=mx.init.Xavier())
    with open(os.path.join(output_data_dir, "host.txt"), "w") as f:
        f.write(current_host)
    return mod
'''


def test_two_hosts_legacy_dist_sync_saves_once_from_the_scheduler_host(sm, s3, logs, bucket, tmp_path):
    from conftest import stream_texts
    job = unique("legacy-dist")
    source = upload_code(s3, bucket, job, {"train.py": DIST_SCRIPT})
    channels, _ = data_channel(s3, bucket, job, tmp_path)
    req = legacy_request(job, bucket, source, channels=channels)
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=300)
    texts = stream_texts(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), {h: t[-2000:] for h, t in texts.items()})
    seen = {}
    for host, text in texts.items():
        seen[host] = tagged(text, "LEGACY-DIST")
    assert sorted(seen) == ["algo-1", "algo-2"]
    assert {s["num_workers"] for s in seen.values()} == {2} and sorted(s["rank"] for s in seen.values()) == [0, 1]
    assert {s["role"] for s in seen.values()} == {"worker"}
    # The legacy scheduler is the first host in sorted order.
    assert len({s["root"] for s in seen.values()}) == 1
    assert "parameter server scheduler on algo-1" in texts["algo-1"]
    assert model_files(s3, d, tmp_path / "model") == ["model-0000.params", "model-shapes.json", "model-symbol.json"]
    # Several hosts: each writes output data under its own name.
    out_key = "output/%s/output/output.tar.gz" % job
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=out_key)["Body"].read())) as tar:
        assert tar.extractfile("algo-1/host.txt").read() == b"algo-1"
