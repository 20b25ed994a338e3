"""The S3 API over an external store (a real Ceph RGW): boto3 and the AWS CLI talk to Clary,
Clary passes each call through to the store under its bucket prefix, and what the store holds
is checked with boto3 pointed at the store itself."""
import base64
import hashlib
import os
import socket
import subprocess
import threading
import time
import types
import urllib.parse
import zlib

import pytest
import urllib3
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import CLARY, Server, external_store_args, external_store_env, unique

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ext_s3(ext_server):
    return ext_server.client("s3")


@pytest.fixture(scope="module")
def store(rgw):
    return rgw.client()


@pytest.fixture
def ext_bucket(ext_s3, ext_server):
    name = unique("ext")
    ext_s3.create_bucket(Bucket=name)
    return name


def in_store(ext_server, bucket):
    return ext_server.bucket_prefix + bucket


def error_of(call):
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Message") or ""


def test_small_and_multipart_uploads_round_trip_with_the_stores_etags(ext_server, ext_s3, store, ext_bucket, tmp_path):
    stored = in_store(ext_server, ext_bucket)
    ext_s3.put_object(Bucket=ext_bucket, Key="small.txt", Body=b"hello store", ContentType="text/x-clary",
                      Metadata={"color": "blue"}, CacheControl="no-cache", ContentDisposition="attachment")
    head = ext_s3.head_object(Bucket=ext_bucket, Key="small.txt")
    assert head["ContentType"] == "text/x-clary" and head["Metadata"] == {"color": "blue"}
    assert head["CacheControl"] == "no-cache" and head["ContentDisposition"] == "attachment"
    # It is the store that holds it, under the prefixed bucket name, with the same description.
    theirs = store.head_object(Bucket=stored, Key="small.txt")
    assert theirs["ETag"] == head["ETag"] == '"%s"' % hashlib.md5(b"hello store").hexdigest()
    assert theirs["ContentType"] == "text/x-clary" and theirs["Metadata"] == {"color": "blue"}
    assert store.get_object(Bucket=stored, Key="small.txt")["Body"].read() == b"hello store"

    data = os.urandom(20 * MiB)
    src = tmp_path / "twenty.bin"
    src.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    ext_s3.upload_file(str(src), ext_bucket, "models/twenty.bin", Config=cfg)
    head = ext_s3.head_object(Bucket=ext_bucket, Key="models/twenty.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-4"'), head["ETag"]
    assert head["ETag"] == store.head_object(Bucket=stored, Key="models/twenty.bin")["ETag"]
    out = tmp_path / "back.bin"
    ext_s3.download_file(ext_bucket, "models/twenty.bin", str(out), Config=cfg)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()

    got = ext_s3.get_object(Bucket=ext_bucket, Key="models/twenty.bin", Range="bytes=1000-1999")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == "bytes 1000-1999/%d" % len(data)
    assert got["Body"].read() == data[1000:2000]
    got = ext_s3.get_object(Bucket=ext_bucket, Key="models/twenty.bin", Range="bytes=-10")
    assert got["Body"].read() == data[-10:]


def test_listings_v1_and_v2_pass_the_stores_pages_through(ext_server, ext_s3, store, ext_bucket):
    keys = ["a.txt", "d/one", "d/sub/x", "d/sub/y", "d/two words+&.txt", "e/é", "z"]
    for k in keys:
        ext_s3.put_object(Bucket=ext_bucket, Key=k, Body=k.encode())
    page = ext_s3.list_objects_v2(Bucket=ext_bucket, Prefix="d/", Delimiter="/")
    assert page["Name"] == ext_bucket
    assert [o["Key"] for o in page["Contents"]] == ["d/one", "d/two words+&.txt"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["d/sub/"]
    assert page["KeyCount"] == 3
    theirs = store.list_objects_v2(Bucket=in_store(ext_server, ext_bucket))
    ours = ext_s3.list_objects_v2(Bucket=ext_bucket)
    assert [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in ours["Contents"]] == \
        [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in theirs["Contents"]]

    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = ext_s3.list_objects_v2(Bucket=ext_bucket, MaxKeys=3, **kw)
        pages += 1
        seen += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == keys and pages == 3
    assert [o["Key"] for o in ext_s3.list_objects_v2(Bucket=ext_bucket, StartAfter="d/two words+&.txt")["Contents"]] == ["e/é", "z"]

    page = ext_s3.list_objects(Bucket=ext_bucket, Delimiter="/")
    assert page["Name"] == ext_bucket
    assert [o["Key"] for o in page["Contents"]] == ["a.txt", "z"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["d/", "e/"]
    v1 = ext_s3.get_paginator("list_objects").paginate(Bucket=ext_bucket, PaginationConfig={"PageSize": 2})
    pages = [[o["Key"] for o in p.get("Contents", [])] for p in v1]
    assert sum(pages, []) == keys and len(pages) == 4
    page = ext_s3.list_objects(Bucket=ext_bucket, Marker="d/sub/y", MaxKeys=1)
    assert [o["Key"] for o in page["Contents"]] == ["d/two words+&.txt"] and page["IsTruncated"]


def test_copy_keeps_or_replaces_metadata_and_maps_the_source_bucket(ext_server, ext_s3, store, ext_bucket):
    other = unique("ext-src")
    ext_s3.create_bucket(Bucket=other)
    ext_s3.put_object(Bucket=other, Key="src", Body=b"copied", ContentType="text/plain", Metadata={"kept": "yes"})
    res = ext_s3.copy_object(Bucket=ext_bucket, Key="kept", CopySource={"Bucket": other, "Key": "src"})
    assert res["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"copied").hexdigest()
    head = ext_s3.head_object(Bucket=ext_bucket, Key="kept")
    assert head["Metadata"] == {"kept": "yes"} and head["ContentType"] == "text/plain"
    ext_s3.copy_object(Bucket=ext_bucket, Key="replaced", CopySource={"Bucket": other, "Key": "src"},
                       MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="application/x-new")
    head = ext_s3.head_object(Bucket=ext_bucket, Key="replaced")
    assert head["Metadata"] == {"new": "1"} and head["ContentType"] == "application/x-new"
    assert store.get_object(Bucket=in_store(ext_server, ext_bucket), Key="replaced")["Body"].read() == b"copied"
    code, status, message = error_of(lambda: ext_s3.copy_object(
        Bucket=ext_bucket, Key="x", CopySource={"Bucket": other, "Key": "missing"}))
    assert (code, status) == ("NoSuchKey", 404)
    assert ext_server.bucket_prefix not in message


def test_deletes_reach_the_store(ext_server, ext_s3, store, ext_bucket):
    stored = in_store(ext_server, ext_bucket)
    for k in ["a", "b", "c", "d"]:
        ext_s3.put_object(Bucket=ext_bucket, Key=k, Body=b"x")
    ext_s3.delete_object(Bucket=ext_bucket, Key="a")
    assert error_of(lambda: store.head_object(Bucket=stored, Key="a"))[1] == 404
    res = ext_s3.delete_objects(Bucket=ext_bucket, Delete={"Objects": [{"Key": k} for k in ["b", "c", "never-there"]]})
    assert sorted(d["Key"] for d in res["Deleted"]) == ["b", "c", "never-there"]
    assert not res.get("Errors")
    assert [o["Key"] for o in store.list_objects_v2(Bucket=stored)["Contents"]] == ["d"]
    code, status, _ = error_of(lambda: ext_s3.delete_bucket(Bucket=ext_bucket))
    assert (code, status) == ("BucketNotEmpty", 409)
    ext_s3.delete_object(Bucket=ext_bucket, Key="d")
    ext_s3.delete_bucket(Bucket=ext_bucket)
    assert stored not in [b["Name"] for b in store.list_buckets()["Buckets"]]


def test_the_stores_errors_come_back_aws_shaped_with_clarys_names(ext_server, ext_s3, ext_bucket):
    ext_s3.put_object(Bucket=ext_bucket, Key="k", Body=b"0123456789")
    etag = ext_s3.head_object(Bucket=ext_bucket, Key="k")["ETag"]
    cases = [
        (lambda: ext_s3.get_object(Bucket=ext_bucket, Key="missing"), "NoSuchKey", 404),
        (lambda: ext_s3.get_object(Bucket=unique("nobucket"), Key="k"), "NoSuchBucket", 404),
        (lambda: ext_s3.list_objects_v2(Bucket=unique("nobucket")), "NoSuchBucket", 404),
        (lambda: ext_s3.get_object(Bucket=ext_bucket, Key="k", Range="bytes=100-200"), "InvalidRange", 416),
        (lambda: ext_s3.get_object(Bucket=ext_bucket, Key="k", IfMatch='"0000"'), "PreconditionFailed", 412),
        (lambda: ext_s3.abort_multipart_upload(Bucket=ext_bucket, Key="k", UploadId="nope"), "NoSuchUpload", 404),
        (lambda: ext_s3.delete_bucket(Bucket=ext_bucket), "BucketNotEmpty", 409),
    ]
    for call, want, status in cases:
        code, got_status, message = error_of(call)
        assert (code, got_status) == (want, status)
        # A message even where the store gives none, and never the store's bucket names.
        assert message and ext_server.bucket_prefix not in message, message
    assert error_of(lambda: ext_s3.get_object(Bucket=ext_bucket, Key="k", IfNoneMatch=etag))[1] == 304
    assert error_of(lambda: ext_s3.head_object(Bucket=ext_bucket, Key="missing"))[:2] == ("404", 404)

    up = ext_s3.create_multipart_upload(Bucket=ext_bucket, Key="mp")["UploadId"]
    p1 = ext_s3.upload_part(Bucket=ext_bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"a" * 1024)
    p2 = ext_s3.upload_part(Bucket=ext_bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"b" * 1024)
    code, status, _ = error_of(lambda: ext_s3.complete_multipart_upload(
        Bucket=ext_bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}))
    assert (code, status) == ("EntityTooSmall", 400)
    up = ext_s3.create_multipart_upload(Bucket=ext_bucket, Key="mp2")["UploadId"]
    ext_s3.upload_part(Bucket=ext_bucket, Key="mp2", UploadId=up, PartNumber=1, Body=b"a")
    code, status, _ = error_of(lambda: ext_s3.complete_multipart_upload(
        Bucket=ext_bucket, Key="mp2", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]}))
    assert (code, status) == ("InvalidPart", 400)
    ext_s3.abort_multipart_upload(Bucket=ext_bucket, Key="mp2", UploadId=up)


def test_multipart_passes_through_part_by_part(ext_server, ext_s3, store, ext_bucket):
    stored = in_store(ext_server, ext_bucket)
    up = ext_s3.create_multipart_upload(Bucket=ext_bucket, Key="big", ContentType="application/x-parts",
                                        Metadata={"m": "v"})["UploadId"]
    assert [u["UploadId"] for u in store.list_multipart_uploads(Bucket=stored)["Uploads"]] == [up]
    listed = ext_s3.list_multipart_uploads(Bucket=ext_bucket)
    assert listed["Bucket"] == ext_bucket and [u["UploadId"] for u in listed["Uploads"]] == [up]
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    etags = [ext_s3.upload_part(Bucket=ext_bucket, Key="big", UploadId=up, PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]
    assert etags == ['"%s"' % hashlib.md5(p).hexdigest() for p in parts]
    ours = ext_s3.list_parts(Bucket=ext_bucket, Key="big", UploadId=up)
    theirs = store.list_parts(Bucket=stored, Key="big", UploadId=up)
    assert ours["Bucket"] == ext_bucket
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in ours["Parts"]] == \
        [(p["PartNumber"], p["ETag"], p["Size"]) for p in theirs["Parts"]] == \
        [(1, etags[0], 5 * MiB), (2, etags[1], MiB)]
    # Parts not yet completed are no object.
    assert error_of(lambda: store.head_object(Bucket=stored, Key="big"))[1] == 404
    done = ext_s3.complete_multipart_upload(Bucket=ext_bucket, Key="big", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    head = store.head_object(Bucket=stored, Key="big")
    assert done["ETag"] == head["ETag"] and done["ETag"].endswith('-2"')
    assert done["Bucket"] == ext_bucket and ext_server.bucket_prefix not in done["Location"]
    assert head["ContentType"] == "application/x-parts" and head["Metadata"] == {"m": "v"}
    assert ext_s3.get_object(Bucket=ext_bucket, Key="big")["Body"].read() == b"".join(parts)
    assert not ext_s3.list_multipart_uploads(Bucket=ext_bucket).get("Uploads")

    up = ext_s3.create_multipart_upload(Bucket=ext_bucket, Key="dropped")["UploadId"]
    ext_s3.upload_part(Bucket=ext_bucket, Key="dropped", UploadId=up, PartNumber=1, Body=b"x")
    ext_s3.abort_multipart_upload(Bucket=ext_bucket, Key="dropped", UploadId=up)
    # As the store says it (Ceph RGW pacific: NoSuchKey, where AWS says NoSuchUpload).
    assert error_of(lambda: ext_s3.list_parts(Bucket=ext_bucket, Key="dropped", UploadId=up))[:2] == \
        error_of(lambda: store.list_parts(Bucket=stored, Key="dropped", UploadId=up))[:2]
    assert error_of(lambda: ext_s3.upload_part(Bucket=ext_bucket, Key="dropped", UploadId=up, PartNumber=1, Body=b"x"))[:2] == \
        ("NoSuchUpload", 404)
    assert error_of(lambda: store.head_object(Bucket=stored, Key="dropped"))[1] == 404


def test_checksums_are_checked_though_the_store_ignores_them(ext_server, ext_s3, store, ext_bucket):
    """Ceph RGW pacific takes any x-amz-checksum-*: Clary checks them on the way and cuts a body
    that fails before the store has all of it, so the object already there stays."""
    stored = in_store(ext_server, ext_bucket)
    ext_s3.put_object(Bucket=ext_bucket, Key="k", Body=b"original")
    b64 = lambda d: base64.b64encode(d).decode()
    bad = [
        dict(ChecksumCRC32=b64(zlib.crc32(b"other").to_bytes(4, "big"))),
        dict(ChecksumSHA256=b64(hashlib.sha256(b"other").digest())),
        dict(ContentMD5=b64(hashlib.md5(b"other").digest())),
    ]
    for kw in bad:
        code, status, _ = error_of(lambda: ext_s3.put_object(Bucket=ext_bucket, Key="k", Body=b"replacement", **kw))
        assert (code, status) == ("BadDigest", 400), kw
        assert store.get_object(Bucket=stored, Key="k")["Body"].read() == b"original"
    res = ext_s3.put_object(Bucket=ext_bucket, Key="k", Body=b"replacement",
                            ChecksumSHA256=b64(hashlib.sha256(b"replacement").digest()))
    assert res["ChecksumSHA256"] == b64(hashlib.sha256(b"replacement").digest())
    assert store.get_object(Bucket=stored, Key="k")["Body"].read() == b"replacement"

    up = ext_s3.create_multipart_upload(Bucket=ext_bucket, Key="mp")["UploadId"]
    code, status, _ = error_of(lambda: ext_s3.upload_part(
        Bucket=ext_bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part",
        ChecksumCRC32=b64(zlib.crc32(b"trap").to_bytes(4, "big"))))
    assert (code, status) == ("BadDigest", 400)
    assert not store.list_parts(Bucket=stored, Key="mp", UploadId=up).get("Parts")
    ext_s3.abort_multipart_upload(Bucket=ext_bucket, Key="mp", UploadId=up)


def aws_chunked(data, trailer):
    out = b""
    for i in range(0, len(data), 64 * 1024):
        part = data[i:i + 64 * 1024]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n" + trailer.encode() + b"\r\n\r\n"


def test_a_trailing_checksum_is_checked_and_the_framing_not_stored(ext_server, ext_s3, store, ext_bucket):
    """What boto3 sends over https: aws-chunked, the CRC32 in a trailer after the last chunk."""
    env = ext_server.env()
    data = os.urandom(300_000)

    def put(key, crc):
        body = aws_chunked(data, "x-amz-checksum-crc32:" + crc)
        req = AWSRequest(method="PUT", url="%s/%s/%s" % (env["AWS_ENDPOINT_URL"], ext_bucket, key), data=body, headers={
            "Content-Encoding": "aws-chunked", "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "X-Amz-Decoded-Content-Length": str(len(data)), "X-Amz-Trailer": "x-amz-checksum-crc32",
            "Content-Length": str(len(body))})
        req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32", "name": "x-amz-checksum-crc32"}}
        S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3", env["AWS_DEFAULT_REGION"]).add_auth(req)
        prepared = req.prepare()
        return urllib3.PoolManager().request("PUT", prepared.url, body=body, headers=dict(prepared.headers))

    bad = put("bad", base64.b64encode(b"\0\0\0\0").decode())
    assert bad.status == 400 and b"BadDigest" in bad.data
    assert error_of(lambda: store.head_object(Bucket=in_store(ext_server, ext_bucket), Key="bad"))[1] == 404
    ok = put("ok", base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode())
    assert ok.status == 200, ok.data
    got = store.get_object(Bucket=in_store(ext_server, ext_bucket), Key="ok")
    assert got["Body"].read() == data and got.get("ContentEncoding") in (None, "")


def test_a_client_that_goes_away_mid_upload_leaves_no_object(ext_server, ext_s3, store, ext_bucket):
    env = ext_server.env()
    ext_s3.put_object(Bucket=ext_bucket, Key="old", Body=b"old content")
    url = urllib.parse.urlparse(env["AWS_ENDPOINT_URL"])
    total = 8 * MiB
    for key in ["new", "old"]:
        req = AWSRequest(method="PUT", url="%s/%s/%s" % (env["AWS_ENDPOINT_URL"], ext_bucket, key),
                         headers={"Content-Length": str(total), "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3", env["AWS_DEFAULT_REGION"]).add_auth(req)
        head = "PUT /%s/%s HTTP/1.1\r\nHost: %s\r\n" % (ext_bucket, key, url.netloc)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in req.headers.items() if k.lower() != "host") + "\r\n"
        with socket.create_connection((url.hostname, url.port)) as s:
            s.sendall(head.encode() + b"z" * (total // 2))
            time.sleep(0.3)
    stored = in_store(ext_server, ext_bucket)
    time.sleep(1)
    assert error_of(lambda: store.head_object(Bucket=stored, Key="new"))[1] == 404
    assert store.get_object(Bucket=stored, Key="old")["Body"].read() == b"old content"


def test_list_buckets_shows_only_clarys_buckets_by_clarys_names(ext_server, ext_s3, store, ext_bucket):
    foreign = unique("not-clarys")
    store.create_bucket(Bucket=foreign)
    try:
        names = [b["Name"] for b in ext_s3.list_buckets()["Buckets"]]
        assert ext_bucket in names
        assert foreign not in names and not any(n.startswith(ext_server.bucket_prefix) for n in names)
        store_names = {b["Name"] for b in store.list_buckets()["Buckets"]}
        assert all(in_store(ext_server, n) in store_names for n in names)
        ext_s3.head_bucket(Bucket=ext_bucket)
        assert error_of(lambda: ext_s3.head_bucket(Bucket=foreign))[:2] == ("404", 404)
    finally:
        store.delete_bucket(Bucket=foreign)


def test_memory_stays_bounded_for_a_large_object(ext_server, ext_s3, ext_bucket, tmp_path):
    """256 MiB through a single PUT and GET: neither body is held whole in the server."""
    def high_water_kb():
        with open("/proc/%d/status" % ext_server.proc.pid) as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
    src = tmp_path / "large.bin"
    block = os.urandom(MiB)
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(block)
    before = high_water_kb()
    with open(src, "rb") as f:
        ext_s3.put_object(Bucket=ext_bucket, Key="large", Body=f)
    body = ext_s3.get_object(Bucket=ext_bucket, Key="large")["Body"]
    n = sum(len(c) for c in body.iter_chunks(MiB))
    assert n == 256 * MiB
    assert high_water_kb() - before < 96 * 1024, (before, high_water_kb())


def test_the_aws_cli_syncs_through_clary_into_the_store(ext_server, store, tmp_path):
    env = dict(os.environ, **ext_server.env())
    bucket = unique("ext-cli")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.bin").write_bytes(os.urandom(9 * MiB))
    run = lambda *a: subprocess.run(["aws", "s3", *a], env=env, check=True, capture_output=True, text=True).stdout
    run("mb", "s3://" + bucket)
    run("sync", str(src), "s3://%s/dir/" % bucket)
    listed = run("ls", "--recursive", "s3://" + bucket)
    assert "dir/a.txt" in listed and "dir/sub/b.bin" in listed
    keys = [o["Key"] for o in store.list_objects_v2(Bucket=in_store(ext_server, bucket))["Contents"]]
    assert keys == ["dir/a.txt", "dir/sub/b.bin"]
    run("cp", "s3://%s/dir/sub/b.bin" % bucket, str(tmp_path / "b.bin"))
    assert (tmp_path / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    run("rb", "--force", "s3://" + bucket)
    assert in_store(ext_server, bucket) not in [b["Name"] for b in store.list_buckets()["Buckets"]]


class Relay:
    """A TCP relay to the store that the test can cut: the store going away under a running
    server, without stopping the store other tests share."""

    def __init__(self, endpoint):
        u = urllib.parse.urlparse(endpoint)
        self.target = (u.hostname, u.port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns, self.lock, self.closed = [], threading.Lock(), False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
                u = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                if self.closed:
                    c.close(), u.close()
                    return
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        with self.lock:
            self.closed = True
            self.sock.close()
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_a_store_that_goes_away_is_a_clear_503_naming_it(rgw, tmp_path):
    relay = Relay(rgw.endpoint)
    prefix = unique("clary-gone") + "-"
    via_relay = types.SimpleNamespace(endpoint=relay.endpoint)
    server = Server(tmp_path / "clary", extra_args=external_store_args(via_relay, prefix),
                    env=external_store_env(rgw)).start()
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="going")
        s3.put_object(Bucket="going", Key="k", Body=b"x")
        relay.close()
        for call in [lambda: s3.get_object(Bucket="going", Key="k"),
                     lambda: s3.put_object(Bucket="going", Key="k2", Body=b"y" * 100_000),
                     lambda: s3.list_objects_v2(Bucket="going"),
                     lambda: s3.list_buckets()]:
            code, status, message = error_of(call)
            assert (code, status) == ("ServiceUnavailable", 503)
            assert relay.endpoint in message, message
            assert rgw.secret_key not in message
        assert error_of(lambda: s3.head_object(Bucket="going", Key="k"))[1] == 503
        with open(os.path.join(server.data_dir, "server.log")) as f:
            log = f.read()
        assert "could not be reached" in log and "Connection refused" in log
    finally:
        server.stop()
    rgw.client().delete_object(Bucket=prefix + "going", Key="k")
    for b in rgw.client().list_buckets()["Buckets"]:
        if b["Name"].startswith(prefix):
            rgw.client().delete_bucket(Bucket=b["Name"])


def test_a_store_that_cannot_be_reached_at_start_stops_the_server_naming_it(rgw, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = "http://127.0.0.1:%d" % s.getsockname()[1]
    data_dir = tmp_path / "clary"
    data_dir.mkdir()
    proc = subprocess.run([CLARY, "server", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
                           *external_store_args(types.SimpleNamespace(endpoint=closed), "clary-")],
                          env=dict(os.environ, **external_store_env(rgw)), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert closed in proc.stderr and "Connection refused" in proc.stderr
    assert rgw.secret_key not in proc.stderr + proc.stdout
