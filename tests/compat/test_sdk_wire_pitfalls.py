"""One regression test per pitfall of docs/sdk-wire.md §0.2 and the error shapes of §9 that a
server can get wrong, driven with boto3/botocore and the SageMaker SDK as users run them.
(Pitfalls 8 and 9, py_version validation and the SDK's sleeps, happen in the client alone.)"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import zlib

import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import job_request, unique, upload_code, wait_for

GROUP = "/aws/sagemaker/TrainingJobs"


def test_p1_p7_default_bucket_and_telemetry_come_from_the_clary_env_config(server, s3):
    """default_bucket() would call the real STS (pitfall 1) and fit() would phone home
    (pitfall 7); the config file `clary env` points SAGEMAKER_USER_CONFIG_OVERRIDE at stops both."""
    code = ("import json, sagemaker\n"
            "from sagemaker.config import load_sagemaker_config\n"
            "cfg = load_sagemaker_config()['SageMaker']['PythonSDK']['Modules']\n"
            "print(json.dumps({'bucket': sagemaker.Session().default_bucket(), 'opt_out': cfg['TelemetryOptOut']}))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **server.env()),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["opt_out"] is True
    assert out["bucket"].startswith("sagemaker-us-east-1-")
    # The SDK made the bucket through Clary (ListBuckets, HeadBucket 404, CreateBucket).
    assert out["bucket"] in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.fixture(scope="module")
def chatty_job(sm, s3, bucket):
    """A finished job whose log has 40 lines, many sharing a millisecond."""
    job = unique("chatty")
    script = "for i in range(40):\n    print('line %02d' % i)\n"
    source = upload_code(s3, bucket, job, {"train.py": script})
    hps = {"weird": '  {"a": [1, 2.50]}  ', "unicode": '"h\\u00e9llo \u2603"', "exp": "1e3", "empty": '""'}
    sm.create_training_job(**job_request(job, bucket, source, hps=hps))
    d = wait_for(sm, job, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    return job, hps


def test_p2_describe_has_every_field_attach_requires(sm, chatty_job):
    d = sm.describe_training_job(TrainingJobName=chatty_job[0])
    assert d["OutputDataConfig"]["KmsKeyId"] == ""
    for path in (("TrainingJobArn",), ("RoleArn",), ("ResourceConfig", "InstanceCount"), ("ResourceConfig", "InstanceType"),
                 ("ResourceConfig", "VolumeSizeInGB"), ("StoppingCondition", "MaxRuntimeInSeconds"),
                 ("AlgorithmSpecification", "TrainingInputMode"), ("AlgorithmSpecification", "TrainingImage"),
                 ("ModelArtifacts", "S3ModelArtifacts"), ("LastModifiedTime",)):
        node = d
        for key in path:
            node = node[key]
    assert d["SecondaryStatusTransitions"][-1]["Status"] == "Completed"
    assert sm.list_tags(ResourceArn=d["TrainingJobArn"])["Tags"] == []


def all_lines(logs, stream, **kw):
    """Forward pages from the head until the empty page, as the SDK's log loop reads them."""
    events, token, pages = [], None, 0
    while True:
        args = dict(logGroupName=GROUP, logStreamName=stream, startFromHead=True, **kw)
        if token:
            args["nextToken"] = token
        page = logs.get_log_events(**args)
        pages += 1
        assert "nextForwardToken" in page  # always, or the SDK's loop dies with a KeyError
        if not page["events"]:
            return events, pages
        events += page["events"]
        token = page["nextForwardToken"]
        assert pages < 100


def test_p3_log_paging_rules_the_sdk_loop_depends_on(logs, chatty_job):
    job = chatty_job[0]
    streams = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job + "/", orderBy="LogStreamName", limit=1)
    # One stream and limit 1: no nextToken (the SDK re-asks without the token while one is present).
    assert len(streams["logStreams"]) == 1 and "nextToken" not in streams
    stream = streams["logStreams"][0]["logStreamName"]
    events, pages = all_lines(logs, stream, limit=7, startTime=0)
    lines = [e["message"] for e in events if e["message"].startswith("line ")]
    assert lines == ["line %02d" % i for i in range(40)]
    assert pages >= 7  # it really paged, and ended on an empty page
    # startTime is inclusive, and events at one timestamp keep their order: asking again from
    # the timestamp of line 20 returns every event with that timestamp first.
    line20 = next(e for e in events if e["message"] == "line 20")
    same = [e["message"] for e in events if e["timestamp"] == line20["timestamp"]]
    again, _ = all_lines(logs, stream, startTime=line20["timestamp"])
    assert [e["message"] for e in again[:len(same)]] == same
    assert again[-1]["message"] == events[-1]["message"]
    # Backward from the tail: the last page first, then nextBackwardToken walks to the head.
    back, token, seen = [], None, set()
    while True:
        args = dict(logGroupName=GROUP, logStreamName=stream, startFromHead=False, limit=9)
        if token:
            args["nextToken"] = token
        page = logs.get_log_events(**args)
        if not page["events"] or page["nextBackwardToken"] in seen:
            break
        seen.add(page["nextBackwardToken"])
        back = page["events"] + back
        token = page["nextBackwardToken"]
    assert [e["message"] for e in back] == [e["message"] for e in events]
    # FilterLogEvents pages with nextToken only while more remain.
    found, token = [], None
    while True:
        args = dict(logGroupName=GROUP, logStreamNamePrefix=job + "/", filterPattern="line", limit=15)
        if token:
            args["nextToken"] = token
        page = logs.filter_log_events(**args)
        found += [e["message"] for e in page["events"]]
        token = page.get("nextToken")
        if not token:
            break
    assert found == ["line %02d" % i for i in range(40)]


def test_p4_hyperparameters_come_back_byte_for_byte(sm, chatty_job):
    job, hps = chatty_job
    stored = sm.describe_training_job(TrainingJobName=job)["HyperParameters"]
    for k, v in hps.items():
        assert stored[k] == v


def test_p5_checksums_the_client_verifies(s3, bucket):
    body = os.urandom(300_000)
    for algorithm in ("CRC32", "SHA1", "SHA256"):  # CRC32C needs botocore[crt]
        key = "sums/" + algorithm
        put = s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm=algorithm)
        # botocore validates any x-amz-checksum-* it gets back; a wrong one raises.
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        field = "Checksum" + algorithm
        if field in got:
            assert got[field] == put[field]
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert s3.head_object(Bucket=bucket, Key="sums/CRC32", ChecksumMode="ENABLED").get("ChecksumCRC32", crc) == crc


def test_p5_expect_100_continue_on_large_puts(s3, bucket):
    seen = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers)))
    body = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="expect/big", Body=body)
    assert seen and seen[-1].get("Expect") in (b"100-continue", "100-continue"), seen
    assert s3.get_object(Bucket=bucket, Key="expect/big")["Body"].read() == body


def aws_chunked(data, chunk=64 * 1024, trailer=None):
    out = b""
    for i in range(0, len(data), chunk):
        part = data[i:i + chunk]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    out += b"0\r\n"
    if trailer:
        out += trailer.encode() + b"\r\n"
    return out + b"\r\n"


def test_p5_aws_chunked_bodies_with_trailing_checksums(server, s3, bucket):
    """What boto3 sends over https: Content-Encoding aws-chunked, an unsigned streaming payload
    and the CRC32 in a trailer. Signed with botocore's own SigV4 signer."""
    env = server.env()
    data = os.urandom(200_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def put(key, trailer_crc, query=""):
        body = aws_chunked(data, trailer="x-amz-checksum-crc32:" + trailer_crc)
        req = AWSRequest(method="PUT", url="%s/%s/%s%s" % (env["AWS_ENDPOINT_URL"], bucket, key, query), data=body, headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "Content-Length": str(len(body)),
        })
        # What botocore's httpchecksum puts in the context when it moves the checksum to a trailer.
        req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32", "name": "x-amz-checksum-crc32"}}
        S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3", env["AWS_DEFAULT_REGION"]).add_auth(req)
        prepared = req.prepare()
        return urllib3.PoolManager().request("PUT", prepared.url, body=body, headers=dict(prepared.headers))

    ok = put("chunked/ok", crc)
    assert ok.status == 200, ok.data
    got = s3.get_object(Bucket=bucket, Key="chunked/ok")
    assert got["Body"].read() == data and got["ContentLength"] == len(data)
    assert got.get("ContentEncoding") in (None, "")  # the framing is not part of the object
    bad = put("chunked/bad", base64.b64encode(b"\0\0\0\0").decode())
    assert bad.status == 400 and b"BadDigest" in bad.data
    with pytest.raises(ClientError):  # a failed upload leaves nothing behind
        s3.head_object(Bucket=bucket, Key="chunked/bad")
    # Multipart parts arrive the same way; a part whose trailer disagrees is refused and the
    # earlier upload of that part number stays.
    up = s3.create_multipart_upload(Bucket=bucket, Key="chunked/mp")["UploadId"]
    assert put("chunked/mp", crc, "?partNumber=1&uploadId=" + up).status == 200
    bad = put("chunked/mp", base64.b64encode(b"\0\0\0\1").decode(), "?partNumber=1&uploadId=" + up)
    assert bad.status == 400 and b"BadDigest" in bad.data
    parts = s3.list_parts(Bucket=bucket, Key="chunked/mp", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(data))]
    etag = parts[0]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="chunked/mp", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="chunked/mp")["Body"].read() == data


def test_p6_api_and_runtime_both_signed_sagemaker_reach_the_right_service(server):
    name = unique("nobody")
    with pytest.raises(ClientError) as api:
        server.client("sagemaker").describe_endpoint(EndpointName=name)
    with pytest.raises(ClientError) as runtime:
        server.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=b"1", ContentType="text/csv")
    assert api.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find endpoint" in api.value.response["Error"]["Message"]
    assert runtime.value.response["Error"]["Code"] == "ValidationError"  # the runtime's own code
    assert "Endpoint %s of account" % name in runtime.value.response["Error"]["Message"]


def test_s9_error_shapes_the_sdk_matches(sm, s3):
    with pytest.raises(ClientError) as probe:  # v1's deploy probe
        sm.describe_endpoint_config(EndpointConfigName=unique("none"))
    assert probe.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find" in probe.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as head:  # default_bucket's HeadBucket
        s3.head_bucket(Bucket=unique("missing-bucket"))
    assert head.value.response["Error"] == {"Code": "404", "Message": "Not Found"}
