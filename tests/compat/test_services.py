"""S3, CloudWatch Logs, STS and IAM through boto3, and the `clary` CLI, against a real server."""
import hashlib
import os
import subprocess

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import CLARY, ROOT, unique


def test_objects_round_trip_with_ranges_checksums_and_listing(s3, bucket):
    body = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key="dir/a.bin", Body=body, ContentType="application/octet-stream", Metadata={"k": "v"})
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="dir/a.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got["Metadata"] == {"k": "v"}
    rng = s3.get_object(Bucket=bucket, Key="dir/a.bin", Range="bytes=10-19", IfMatch=put["ETag"])
    assert rng["Body"].read() == body[10:20] and rng["ContentRange"] == "bytes 10-19/100000"
    tail = s3.get_object(Bucket=bucket, Key="dir/a.bin", Range="bytes=99990-")
    assert tail["Body"].read() == body[99990:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/a.bin", IfMatch='"0000"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.head_object(Bucket=bucket, Key="dir/a.bin")["ContentLength"] == 100_000
    for k in ["dir/b.txt", "dir/sub/c.txt", "top.txt"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    lst = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in lst["Contents"]] == ["dir/a.bin", "dir/b.txt"]
    assert [p["Prefix"] for p in lst["CommonPrefixes"]] == ["dir/sub/"]
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dir/", PaginationConfig={"PageSize": 1}) for o in p.get("Contents", [])]
    assert keys == ["dir/a.bin", "dir/b.txt", "dir/sub/c.txt"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="dir/", MaxKeys=2)
    assert v1["IsTruncated"] and len(v1["Contents"]) == 2
    s3.copy_object(Bucket=bucket, Key="copy.bin", CopySource={"Bucket": bucket, "Key": "dir/a.bin"})
    assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == body
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy.bin"}, {"Key": "top.txt"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["copy.bin", "top.txt"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="copy.bin")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_multipart_upload_and_parallel_ranged_download(s3, bucket, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 123))
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=4)
    s3.upload_file(str(src), bucket, "big/big.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big/big.bin")
    assert head["ETag"].endswith('-5"') and head["ContentLength"] == src.stat().st_size
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "big/big.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp/aborted")
    s3.upload_part(Bucket=bucket, Key="mp/aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
    assert len(s3.list_parts(Bucket=bucket, Key="mp/aborted", UploadId=up["UploadId"])["Parts"]) == 1
    s3.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=up["UploadId"])
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="mp/aborted", UploadId=up["UploadId"])
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="mp/")


def test_buckets(s3):
    name = unique("bkt")
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert e.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"1")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert e.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    # The SDK's default_bucket() compares exactly these strings.
    assert e.value.response["Error"]["Code"] == "404" and e.value.response["Error"]["Message"] == "Not Found"


def test_logs_missing_group_and_sts_iam(server, logs):
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Nope")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    sts, iam = server.client("sts"), server.client("iam")
    account = sts.get_caller_identity()["Account"]
    assert len(account) == 12 and account.isdigit()
    arn = iam.get_role(RoleName="SageMakerRole")["Role"]["Arn"]
    assert arn == "arn:aws:iam::%s:role/SageMakerRole" % account
    assert iam.get_role(RoleName="SageMakerRole")["Role"]["RoleId"] == iam.get_role(RoleName="SageMakerRole")["Role"]["RoleId"]


def test_cli_train_wait_then_jobs_and_logs(server, tmp_path):
    env = dict(os.environ)
    env.update(server.env())
    data = tmp_path / "data"
    import sys
    subprocess.run([sys.executable, os.path.join(ROOT, "examples/mnist/generate_data.py"), str(data), "--train", "300", "--test", "100"], check=True)
    job = unique("cli")
    out = subprocess.run(
        [CLARY, "train", "examples/mnist/train.py", "--source-dir", "examples/mnist", "--channel", "train=%s" % (data / "train"),
         "--channel", "test=%s" % (data / "test"), "--hp", "epochs=1", "--hp", "learning-rate=0.1", "--job-name", job, "--wait"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "final test accuracy" in out.stdout
    assert "Model artifacts: s3://" in out.stdout and "/%s/output/model.tar.gz" % job in out.stdout
    listed = subprocess.run([CLARY, "jobs", "list", "--name-contains", job], env=env, capture_output=True, text=True, check=True).stdout
    assert job in listed and "Completed" in listed
    logs = subprocess.run([CLARY, "logs", job], env=env, capture_output=True, text=True, check=True).stdout
    assert "final test accuracy" in logs
    bad = subprocess.run([CLARY, "jobs", "describe", "no-such-job"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "ValidationException" in bad.stderr


def test_cli_uses_the_account_of_the_server_it_talks_to(server, tmp_path):
    """`clary train` without --bucket takes the default bucket of the server it is pointed at,
    not of whatever data dir (and identity.json) is local."""
    env = dict(os.environ)
    env.update(server.env())
    env["CLARY_DATA_DIR"] = str(tmp_path / "another-data-dir")  # another identity, another account
    script = tmp_path / "train.py"
    script.write_text("print('trained against the right server')\n")
    job = unique("cli-account")
    out = subprocess.run([CLARY, "train", str(script), "--job-name", job, "--wait"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    account = server.client("sts").get_caller_identity()["Account"]
    assert "Model artifacts: s3://sagemaker-us-east-1-%s/" % account in out.stdout, out.stdout
    d = server.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert d["RoleArn"] == "arn:aws:iam::%s:role/SageMakerRole" % account
