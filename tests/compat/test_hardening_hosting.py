"""Hosting under faults: what clients see while an endpoint's only instance is replaced."""
import os
import signal
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import deploy, pids_of, unique, wait_endpoint

SLOW_START = '''
import time

def model_fn(model_dir):
    # Long enough that a client sees the endpoint while its replacement starts.
    time.sleep(4)
    return "ready"

def transform_fn(model, data, content_type, accept):
    return b"ok", "text/plain"
'''


def model_server_pids(data_dir, endpoint):
    """PIDs of the model servers of `endpoint` (children of the server this test run started)."""
    return pids_of(b"model-server", os.path.join(data_dir, "endpoints", endpoint))


def test_invoke_while_the_only_instance_is_replaced_answers_a_retryable_503(server, sm, s3, bucket):
    name = unique("replaced")
    deploy(sm, s3, bucket, name, {"code/inference.py": SLOW_START})
    wait_endpoint(sm, name, until=("InService",))
    e = server.env()
    once = boto3.client("sagemaker-runtime", endpoint_url=e["AWS_ENDPOINT_URL"],
                        aws_access_key_id=e["AWS_ACCESS_KEY_ID"], aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
                        region_name=e["AWS_DEFAULT_REGION"], config=Config(retries={"total_max_attempts": 1}))
    assert once.invoke_endpoint(EndpointName=name, Body=b"x")["Body"].read() == b"ok"

    pids = model_server_pids(server.data_dir, name)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)

    codes = []
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            once.invoke_endpoint(EndpointName=name, Body=b"x")
            codes.append(200)
            if 503 in codes:
                break
        except ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            assert status == 503, e.response
            assert e.response["Error"]["Code"] == "ServiceUnavailable", e.response
            assert "retry" in e.response["Error"]["Message"]
            codes.append(status)
        time.sleep(0.05)
    assert 503 in codes, "the replacement window was never seen: %s" % codes[:20]
    assert codes[-1] == 200, "the replacement never served"
    # The default client retries 503s, so an SDK user just sees a slower call.
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"


def test_only_the_router_reaches_an_instance(server, sm, s3, rt, bucket):
    """A model server's port is on loopback, where any local user can connect: without its
    instance's token (in its spec, private to the server's user) it answers nothing."""
    import glob
    import json
    import urllib.error
    import urllib.request

    name = unique("private")
    deploy(sm, s3, bucket, name, {"code/inference.py": SLOW_START.replace("time.sleep(4)", "pass")})
    wait_endpoint(sm, name, until=("InService",))
    [spec_path] = glob.glob(os.path.join(server.data_dir, "endpoints", name, "*", "spec.json"))
    with open(spec_path) as f:
        spec = json.load(f)
    assert len(spec["token"]) >= 32
    base = "http://127.0.0.1:%d" % spec["port"]

    def status(path, data=None, token=None):
        req = urllib.request.Request(base + path, data=data)
        if token:
            req.add_header("X-Clary-Instance-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    code, body = status("/invocations", b"x")
    assert code == 403 and b"InvokeEndpoint" in body, (code, body)
    assert status("/ping")[0] == 403
    assert status("/execution-parameters")[0] == 403
    assert status("/invocations", b"x", token="0" * len(spec["token"]))[0] == 403
    assert status("/ping", token=spec["token"])[0] == 200
    # The router holds the token.
    assert rt.invoke_endpoint(EndpointName=name, Body=b"x")["Body"].read() == b"ok"


def test_a_failed_endpoints_reason_shows_no_server_path(server, sm, s3, bucket):
    name = unique("pathless")
    deploy(sm, s3, bucket, name, {"code/inference.py": (
        "def model_fn(model_dir):\n"
        "    raise RuntimeError('weights are missing from ' + model_dir)\n")})
    d = wait_endpoint(sm, name, until=("Failed",))
    reason = d["FailureReason"]
    assert "weights are missing from /opt/ml/model" in reason, reason
    assert server.data_dir not in reason, reason
    assert os.path.expanduser("~") + "/" not in reason, reason
