"""Hosting end to end with boto3 and real MXNet: models, endpoint configs, endpoints, the model
server's handler chain, InvokeEndpoint routing and errors."""
import io
import json
import os
import tempfile
import threading
import time

import mxnet as mx
import numpy as np
import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, deploy, endpoint_log, unique, wait_endpoint


def mlp_files():
    """An MLP exported the way the training example saves it, as {file: bytes}."""
    mx.random.seed(7)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(32, activation="relu"), mx.gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 784)))
    d = tempfile.mkdtemp()
    net.export(os.path.join(d, "model"), epoch=0)
    files = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    files["model-shapes.json"] = json.dumps([{"name": "data", "shape": [1, 784]}])
    return files, d


@pytest.fixture(scope="session")
def mlp():
    return mlp_files()


def in_process(model_dir, rows):
    """What the same model predicts in this process, through Module.predict."""
    sym, args, aux = mx.model.load_checkpoint(os.path.join(model_dir, "model"), 0)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(for_training=False, data_shapes=[("data", (len(rows), 784))])
    mod.set_params(args, aux)
    return mod.predict(mx.io.NDArrayIter(mx.nd.array(rows), batch_size=len(rows))).asnumpy()


def model_error(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"], err.get("OriginalStatusCode"), err.get("OriginalMessage", "")


def test_module_model_with_default_handlers(sm, s3, rt, logs, bucket, mlp):
    files, model_dir = mlp
    name = unique("module")
    deploy(sm, s3, bucket, name, files)
    d = wait_endpoint(sm, name)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 1

    rows = np.random.RandomState(0).rand(3, 784).astype("float32")
    want = in_process(model_dir, rows)
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps(rows.tolist()))
    assert r["ContentType"] == "application/json"
    assert r["InvokedProductionVariant"] == "AllTraffic"
    got = np.array(json.loads(r["Body"].read()))
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    r = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="text/csv",
                           Body="\n".join(",".join(str(float(x)) for x in row) for row in rows))
    assert r["ContentType"] == "text/csv"
    got = np.loadtxt(io.StringIO(r["Body"].read().decode()), delimiter=",")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    buf = io.BytesIO()
    np.save(buf, rows)
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue())
    assert r["ContentType"] == "application/x-npy"
    got = np.load(io.BytesIO(r["Body"].read()))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # Honest errors, surfaced as SageMaker's ModelError with the model's status.
    for kw, status, text in [
        (dict(ContentType="application/xml", Body="<x/>"), 415, "not supported by the default input_fn"),
        (dict(ContentType="application/json", Accept="image/png", Body=json.dumps([[0.0] * 784])), 406, "not supported by the default output_fn"),
        (dict(ContentType="application/json", Body="[[1, 2"), 400, "not valid application/json"),
        (dict(ContentType="application/json", Body="[[1, 2, 3]]"), 400, "does not fit the model's input"),
    ]:
        with pytest.raises(ClientError) as e:
            rt.invoke_endpoint(EndpointName=name, **kw)
        code, original, message = model_error(e)
        assert (code, original) == ("ModelError", status), e.value.response
        assert text in message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "/aws/sagemaker/Endpoints/" + name in e.value.response["LogStreamArn"]

    # Oversized bodies are refused before they reach the model.
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=b"[" + b"1," * (3 * 1024 * 1024) + b"1]")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413

    assert "model loaded" in endpoint_log(logs, name)

    # The resources read back as described, and names are unique.
    assert sm.describe_model(ModelName=name)["PrimaryContainer"]["Image"].endswith("mxnet-inference:1.9.0-cpu-py38")
    cfg = sm.describe_endpoint_config(EndpointConfigName=name)
    assert cfg["ProductionVariants"][0]["ModelName"] == name
    assert name in [e["EndpointName"] for e in sm.list_endpoints(NameContains=name[:12])["Endpoints"]]
    assert name in [m["ModelName"] for m in sm.list_models(NameContains=name)["Models"]]
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=sm.describe_model(ModelName=name)["PrimaryContainer"])
    assert "Cannot create already existing model" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert "Cannot create already existing endpoint" in str(e.value)

    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[[1]]")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint %s of account" % name in str(e.value)
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)
    with pytest.raises(ClientError) as e:
        sm.describe_endpoint_config(EndpointConfigName=name)
    assert "Could not find endpoint configuration" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.describe_model(ModelName=name)
    assert "Could not find model" in str(e.value)


def wait_gone(sm, name, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            sm.describe_endpoint(EndpointName=name)
        except ClientError as e:
            assert "Could not find endpoint" in str(e)
            return
        time.sleep(0.2)
    raise AssertionError("endpoint %s was not deleted" % name)


GLUON_INFERENCE = '''
import json, os
import mxnet as mx

def model_fn(model_dir):
    net = mx.gluon.nn.SymbolBlock.imports(os.path.join(model_dir, "model-symbol.json"), ["data"],
                                          os.path.join(model_dir, "model-0000.params"))
    return net

def output_fn(prediction, accept, context):
    context.set_response_custom_attributes("echo=" + (context.custom_attributes or ""))
    return json.dumps({"argmax": prediction.argmax(axis=1).asnumpy().tolist()}), "application/vnd.argmax+json"
'''


def test_gluon_model_fn_and_custom_attributes(sm, s3, rt, bucket, mlp):
    files, model_dir = mlp
    files = dict(files, **{"code/inference.py": GLUON_INFERENCE})
    del files["model-shapes.json"]
    name = unique("gluon")
    deploy(sm, s3, bucket, name, files, env={"SAGEMAKER_PROGRAM": "inference.py"})
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    rows = np.random.RandomState(1).rand(2, 784).astype("float32")
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps(rows.tolist()),
                           CustomAttributes="trace-42")
    assert r["ContentType"] == "application/vnd.argmax+json"
    assert r["CustomAttributes"] == "echo=trace-42"
    assert json.loads(r["Body"].read())["argmax"] == in_process(model_dir, rows).argmax(axis=1).tolist()


TRANSFORM = '''
import json
def model_fn(model_dir):
    return {"scale": 3}
def transform_fn(model, data, content_type, accept):
    values = json.loads(data)
    return json.dumps([v * model["scale"] for v in values]), "application/json"
'''

CRASHY = '''
import json, os, time
def model_fn(model_dir):
    return "plain"
def input_fn(data, content_type):
    return json.loads(data)
def predict_fn(data, model):
    if data == "crash":
        os._exit(3)
    if data == "slow":
        time.sleep(5)
    return data
def output_fn(prediction, accept):
    return json.dumps(prediction)
'''


def test_transform_fn_and_two_endpoints_at_once(sm, s3, rt, bucket):
    a, b = unique("transform"), unique("crashy")
    deploy(sm, s3, bucket, a, {"code/inference.py": TRANSFORM})
    deploy(sm, s3, bucket, b, {"code/inference.py": CRASHY}, count=2,
           env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"})
    assert wait_endpoint(sm, a)["EndpointStatus"] == "InService"
    assert wait_endpoint(sm, b)["EndpointStatus"] == "InService"
    assert sm.describe_endpoint(EndpointName=b)["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    r = rt.invoke_endpoint(EndpointName=a, ContentType="application/json", Body="[1, 2]")
    assert json.loads(r["Body"].read()) == [3, 6]

    # A worker crash under load fails only the request it held; the rest are answered and the
    # worker comes back.
    results = {}

    def call(i, payload):
        try:
            r = rt.invoke_endpoint(EndpointName=b, ContentType="application/json", Body=json.dumps(payload))
            results[i] = json.loads(r["Body"].read())
        except ClientError as e:
            results[i] = e.response
        except Exception as e:  # noqa: BLE001 - anything else is reported by the assertion below
            results[i] = repr(e)

    threads = [threading.Thread(target=call, args=(i, "crash" if i == 5 else i)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [i for i, v in results.items() if isinstance(v, dict)]
    assert 5 in failed
    assert results[5]["Error"]["Code"] == "ModelError"
    assert "crashed" in results[5]["OriginalMessage"]
    ok = [i for i, v in results.items() if v == i]
    assert len(ok) >= 30, {i: (v["Error"]["Code"], v.get("OriginalStatusCode"), v["Error"]["Message"][:160])
                           if isinstance(v, dict) else v for i, v in results.items() if v != i}
    for i in range(10):
        r = rt.invoke_endpoint(EndpointName=b, ContentType="application/json", Body=json.dumps(i))
        assert json.loads(r["Body"].read()) == i

    # A request past SAGEMAKER_MODEL_SERVER_TIMEOUT is answered with an error, and its worker replaced.
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=b, ContentType="application/json", Body='"slow"')
    assert e.value.response["OriginalStatusCode"] == 504
    r = rt.invoke_endpoint(EndpointName=b, ContentType="application/json", Body='"fine"')
    assert json.loads(r["Body"].read()) == "fine"


FAILING = '''
def model_fn(model_dir):
    raise RuntimeError("weights are missing from " + model_dir)
'''


def test_failing_model_fn_fails_the_endpoint_with_the_reason(sm, s3, bucket):
    name = unique("broken")
    deploy(sm, s3, bucket, name, {"code/inference.py": FAILING})
    d = wait_endpoint(sm, name, until=("Failed",))
    assert "RuntimeError: weights are missing from" in d["FailureReason"]
    assert "ping health check" in d["FailureReason"]


LEGACY = '''
import json
import mxnet as mx

def predict_fn(model, data):
    # Legacy (MXNet <= 1.2) signature: the model comes first.
    return model.predict(data)

def output_fn(prediction, accept):
    return json.dumps({"rows": prediction.shape[0]}), "application/json"
'''


def test_legacy_signatures_and_code_from_submit_directory(sm, s3, rt, bucket, mlp):
    files, _ = mlp
    name = unique("legacy")
    s3.put_object(Bucket=bucket, Key="code/%s/sourcedir.tar.gz" % name,
                  Body=__import__("conftest").tar_gz({"legacy_handler.py": LEGACY}))
    deploy(sm, s3, bucket, name, files,
           image="520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-mxnet:1.2.1-cpu-py2",
           env={"SAGEMAKER_PROGRAM": "legacy_handler.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "s3://%s/code/%s/sourcedir.tar.gz" % (bucket, name)})
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps([[0.5] * 784] * 4))
    assert json.loads(r["Body"].read()) == {"rows": 4}


def test_variants_update_and_bad_requests(sm, s3, rt, bucket):
    name = unique("variants")
    deploy(sm, s3, bucket, name, {"code/inference.py": TRANSFORM})
    sm.create_model(ModelName=name + "-b", ExecutionRoleArn=ROLE,
                    PrimaryContainer=sm.describe_model(ModelName=name)["PrimaryContainer"])
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    sm.create_endpoint_config(EndpointConfigName=name + "-two", ProductionVariants=[
        {"VariantName": "blue", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large", "InitialVariantWeight": 1},
        {"VariantName": "green", "ModelName": name + "-b", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large", "InitialVariantWeight": 1}])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=name + "-two")
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
    # Traffic keeps flowing to the old instances during the update.
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1]")
    assert json.loads(r["Body"].read()) == [3]
    d = wait_endpoint(sm, name, until=("InService",))
    assert d["EndpointConfigName"] == name + "-two"
    seen = {rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1]")["InvokedProductionVariant"]
            for _ in range(30)}
    assert seen == {"blue", "green"}
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1]", TargetVariant="green")
    assert r["InvokedProductionVariant"] == "green"

    # A config whose model cannot load rolls back; the endpoint keeps serving.
    broken = name + "-broken"
    deploy(sm, s3, bucket, broken, {"code/inference.py": FAILING})
    sm.update_endpoint(EndpointName=name, EndpointConfigName=broken)
    d = wait_endpoint(sm, name, until=("InService",), timeout=120)
    for _ in range(100):
        d = sm.describe_endpoint(EndpointName=name)
        if d.get("FailureReason"):
            break
        time.sleep(0.2)
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == name + "-two"
    assert "weights are missing" in d["FailureReason"]
    assert json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[2]")["Body"].read()) == [6]

    for bad, text in [
        (dict(EndpointConfigName=unique("c"), ProductionVariants=[{"VariantName": "a", "ModelName": name,
          "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1}}]), "ServerlessConfig is not supported"),
        (dict(EndpointConfigName=unique("c"), ProductionVariants=[{"VariantName": "a", "ModelName": "nope-" + name,
          "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]), "Could not find model"),
    ]:
        with pytest.raises(ClientError) as e:
            sm.create_endpoint_config(**bad)
        assert text in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=unique("m"), ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.0-cpu-py310",
            "ModelDataUrl": "s3://%s/x" % bucket})
    assert "not an MXNet inference image" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=unique("m"), ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38",
            "ModelDataUrl": "s3://%s/missing/model.tar.gz" % bucket})
    assert "Could not access model data" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.create_endpoint(EndpointName=unique("e"), EndpointConfigName="no-such-config")
    assert "Could not find endpoint configuration" in str(e.value)
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1]", TargetVariant="purple")
    assert "purple" in str(e.value)


def test_server_restart_keeps_endpoints_serving(tmp_path):
    from conftest import Server
    first = Server(tmp_path / "data").start()
    try:
        sm, s3 = first.client("sagemaker"), first.client("s3")
        s3.create_bucket(Bucket="restart")
        name = unique("restart")
        deploy(sm, s3, "restart", name, {"code/inference.py": TRANSFORM})
        assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
        first.stop(keep_endpoints=True)
        second = Server(tmp_path / "data", listen=first.listen).start()
        try:
            sm, rt = second.client("sagemaker"), second.client("sagemaker-runtime")
            assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
            deadline = time.time() + 30
            while True:
                try:
                    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[5]")
                    break
                except ClientError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            assert json.loads(r["Body"].read()) == [15]
        finally:
            second.stop()
    finally:
        first.stop()


# The first worker to load is quick; every later one (the second worker, a replacement) takes
# seconds, as workers do on a loaded machine.
SLOW_SECOND = '''
import json, os, time
def model_fn(model_dir):
    marker = os.path.join(model_dir, "..", "first-worker-loaded")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        time.sleep(6)
    return "plain"
def input_fn(data, content_type):
    return json.loads(data)
def predict_fn(data, model):
    if data == "crash":
        os._exit(3)
    return data
def output_fn(prediction, accept):
    return json.dumps(prediction)
'''


def test_requests_wait_while_every_worker_is_being_replaced(sm, s3, rt, bucket):
    """The only loaded worker crashes while the other is still loading: the next request waits
    for a worker instead of being refused as if the model had never loaded (the cause of an
    intermittent 503 "still loading" under load)."""
    name = unique("replacing")
    deploy(sm, s3, bucket, name, {"code/inference.py": SLOW_SECOND},
           env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body='"crash"')
    assert "crashed" in e.value.response["OriginalMessage"]
    started = time.time()
    r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body='"after"')
    assert json.loads(r["Body"].read()) == "after"
    assert time.time() - started > 1, "a worker was already back: the test did not reach the gap"
    sm.delete_endpoint(EndpointName=name)
