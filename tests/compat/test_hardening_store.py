"""The object store under hostile or unlucky use (issue 15): every key S3 accepts, concurrent
multipart completion, uploads cut by a crash. Real boto3 against a real `clary server`."""
import base64
import concurrent.futures
import hashlib
import io
import os
import signal
import tarfile

import pytest
from botocore.exceptions import ClientError

from conftest import Server, job_request, log_text, tagged, unique, wait_for


def _no_server_path(text, server):
    assert server.data_dir not in text, text
    assert "/objects/" not in text and "/buckets/" not in text, text


def test_every_key_s3_accepts_is_stored_and_listed(server, s3):
    bucket = unique("keys")
    s3.create_bucket(Bucket=bucket)
    seg = "s" * 230
    keys = [
        "k" * 1024,
        "d/" + seg,
        "d/" + seg + "/x",
        "d/" + seg + "0",
        "d/short",
        "é" * 150,
        "é" * 150 + "/a",
        "é" * 512,
    ]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(key.encode())
    want = sorted(keys, key=lambda k: k.encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == want
    page = s3.list_objects_v2(Bucket=bucket, Prefix="d/" + seg)
    assert [o["Key"] for o in page["Contents"]] == [k for k in want if k.startswith("d/" + seg)]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="d/", Delimiter="/")
    assert [o["Key"] for o in page["Contents"]] == ["d/short", "d/" + seg, "d/" + seg + "0"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["d/" + seg + "/"]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="é" * 150 + "/")
    assert [o["Key"] for o in page["Contents"]] == ["é" * 150 + "/a"]
    # Paging walks the same order.
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=3, **kw)
        seen += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == want
    s3.copy_object(Bucket=bucket, Key="copy/" + "é" * 300, CopySource={"Bucket": bucket, "Key": "k" * 1024})
    assert s3.get_object(Bucket=bucket, Key="copy/" + "é" * 300)["Body"].read() == b"k" * 1024

    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert e.value.response["Error"]["Code"] == "KeyTooLongError"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    _no_server_path(str(e.value.response), server)

    for key in keys + ["copy/" + "é" * 300]:
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)


def test_concurrent_completions_of_one_upload(server, s3):
    """Exactly one completion joins the parts and answers 200; the others wait for it and get 404
    NoSuchUpload, never a 500 or a second join."""
    bucket = unique("mpu")
    s3.create_bucket(Bucket=bucket)
    clients = [server.client("s3") for _ in range(16)]
    for round in range(6):
        key = "big-%d" % round
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        first = bytes([round]) * (16 * 1024 * 1024)
        parts = [
            {"PartNumber": 1, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=first)["ETag"]},
            {"PartNumber": 2, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=2, Body=b"tail")["ETag"]},
        ]

        def complete(client):
            try:
                r = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                                     MultipartUpload={"Parts": parts})
                return 200, r["ETag"]
            except ClientError as e:
                _no_server_path(str(e.response), server)
                return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]

        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(complete, clients))
        ok = [r for r in results if r[0] == 200]
        assert len(ok) == 1 and all(r == (404, "NoSuchUpload") for r in results if r[0] != 200), results
        head = s3.head_object(Bucket=bucket, Key=key)
        assert {etag for _, etag in ok} == {head["ETag"]}
        assert head["ContentLength"] == len(first) + 4
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_restart_removes_uploads_a_crash_cut_short(tmp_path):
    """What a killed server was writing stays in objects/tmp; the next start removes it."""
    srv = Server(tmp_path / "data").start()
    try:
        s3 = srv.client("s3")
        s3.create_bucket(Bucket="crash-bucket")
        s3.put_object(Bucket="crash-bucket", Key="kept", Body=b"committed")
        srv.stop(signal.SIGKILL)
        tmp = os.path.join(srv.data_dir, "objects", "tmp")
        # As an upload cut by the kill leaves it: a temporary file nobody holds any more.
        for name in ("o-" + "0" * 32, "p-" + "1" * 32):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(b"\0" * 4096)
        srv.start()
        assert os.listdir(tmp) == []
        s3 = srv.client("s3")
        assert s3.get_object(Bucket="crash-bucket", Key="kept")["Body"].read() == b"committed"
    finally:
        srv.stop()


def test_extracted_code_loses_setuid_setgid_group_and_world_bits(sm, s3, logs, bucket):
    """A source archive's modes reach the job without setuid, setgid, sticky or any group/world
    bit: another local user could otherwise run code as the server's user, read it or change it."""
    job = unique("modes")
    script = (b"import json, os\n"
              b"m = {p: oct(os.stat(p).st_mode & 0o7777) for p in ('tool', 'bin', 'bin/shared.sh')}\n"
              b"print('MODES ' + json.dumps(m))\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mode, data in (("train.py", 0o644, script), ("tool", 0o6777, b"#!/bin/sh\n"),
                                 ("bin", 0o1777, None), ("bin/shared.sh", 0o777, b"true\n")):
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    key = "%s/source/sourcedir.tar.gz" % job
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    sm.create_training_job(**job_request(job, bucket, "s3://%s/%s" % (bucket, key)))
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert tagged(log_text(logs, job), "MODES") == {"tool": "0o700", "bin": "0o700", "bin/shared.sh": "0o700"}


def _may_make_mounts():
    """Whether this process (and so the agent it starts) has CAP_SYS_ADMIN."""
    with open("/proc/self/status") as f:
        caps = next(line.split()[1] for line in f if line.startswith("CapEff:"))
    return bool(int(caps, 16) & (1 << 21))


def test_a_script_writing_to_its_input_never_changes_the_stored_object(sm, s3, logs, bucket):
    """A script may write into its input directory, as on SageMaker (rewrite, chmod, add files,
    unpack there) and read back what it wrote; the stored object keeps its bytes, ETag and
    checksum. As root (CI) the inputs are links under an overlay; elsewhere clones or copies."""
    job = unique("immutable")
    original = b"original bytes"
    put = s3.put_object(Bucket=bucket, Key=job + "/data/a.bin", Body=original,
                        ChecksumAlgorithm="SHA256")
    script = (b"import os\n"
              b"d = os.environ['SM_CHANNEL_TRAIN']\n"
              b"p = os.path.join(d, 'a.bin')\n"
              b"with open(p, 'r+b') as f:\n"
              b"    f.write(b'CHANGED!')\n"
              b"os.chmod(p, 0o600)\n"
              b"os.makedirs(os.path.join(d, 'unpacked'))\n"
              b"with open(os.path.join(d, 'unpacked', 'new.txt'), 'w') as f:\n"
              b"    f.write('mine')\n"
              b"print('WROTE', open(p, 'rb').read(), open(os.path.join(d, 'unpacked', 'new.txt')).read())\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script))
    s3.put_object(Bucket=bucket, Key=job + "/source/sourcedir.tar.gz", Body=buf.getvalue())
    req = job_request(job, bucket, "s3://%s/%s/source/sourcedir.tar.gz" % (bucket, job),
                      channels={"train": "s3://%s/%s/data" % (bucket, job)})
    sm.create_training_job(**req)
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    text = log_text(logs, job)
    assert "WROTE b'CHANGED! bytes' mine" in text, text
    ways = ["1 linked from the store, read-only under an overlay", "1 copied from the store",
            "1 cloned copy-on-write"]
    assert any(w in text for w in ways), text
    if _may_make_mounts():
        assert ways[0] in text, text
    # botocore checks the body against the stored SHA-256 when ChecksumMode is on.
    obj = s3.get_object(Bucket=bucket, Key=job + "/data/a.bin", ChecksumMode="ENABLED")
    assert obj["Body"].read() == original
    assert obj["ETag"] == put["ETag"] == '"%s"' % hashlib.md5(original).hexdigest()
    assert obj["ChecksumSHA256"] == put["ChecksumSHA256"] == \
        base64.b64encode(hashlib.sha256(original).digest()).decode()
