"""The server's API log: one structured line per call, with --log-format json for machines,
naming the operation, the resource, the status, the duration and the caller's access key id,
and never a secret or a body."""
import json
import os

import botocore.exceptions
import pytest

from conftest import Server, unique


@pytest.fixture(scope="module")
def json_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("apilog"), extra_args=["--log-format", "json"]).start()
    yield s
    s.stop()


def api_lines(server):
    with open(os.path.join(server.data_dir, "server.log")) as f:
        text = f.read()
    lines = [json.loads(l) for l in text.splitlines() if l.strip()]
    return text, [l for l in lines if l.get("target") == "clary::api"]


def test_every_call_is_one_json_line_without_secrets(json_server):
    sm = json_server.client("sagemaker")
    s3 = json_server.client("s3")
    env = json_server.env()
    missing = unique("nosuchjob")
    sm.list_training_jobs(MaxResults=5)
    with pytest.raises(botocore.exceptions.ClientError):
        sm.describe_training_job(TrainingJobName=missing)
    bucket = unique("apilog")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret-body.txt", Body=b"the body stays out of the log")
    json_server.client("sts").get_caller_identity()

    text, calls = api_lines(json_server)
    ops = [c["operation"] for c in calls]
    assert "SageMaker.ListTrainingJobs" in ops
    assert "sts:GetCallerIdentity" in ops
    assert any(o.startswith("S3 PUT") for o in ops)

    failed = [c for c in calls if c.get("resource") == missing]
    assert failed, calls
    line = failed[0]
    assert line["operation"] == "SageMaker.DescribeTrainingJob"
    assert line["status"] == 400
    assert line["error_code"] == "ValidationException"
    assert missing in line["error"]
    assert line["access_key"] == env["AWS_ACCESS_KEY_ID"]
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert "timestamp" in line and line["level"] == "INFO"

    put = [c for c in calls if c["operation"] == "S3 PUT" and c["resource"].endswith("secret-body.txt")]
    assert put and put[0]["status"] == 200

    assert env["AWS_SECRET_ACCESS_KEY"] not in text
    assert "the body stays out of the log" not in text


def test_text_format_is_the_default(server):
    server.client("sagemaker").list_training_jobs(MaxResults=1)
    with open(os.path.join(server.data_dir, "server.log")) as f:
        text = f.read()
    call = [l for l in text.splitlines() if "api call" in l and "SageMaker.ListTrainingJobs" in l]
    assert call, text[-2000:]
    assert "status=200" in call[-1]
    assert server.env()["AWS_SECRET_ACCESS_KEY"] not in text
