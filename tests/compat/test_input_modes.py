"""Input modes and data distribution through boto3 against a real `clary server`: Pipe mode
FIFOs (a 1 GiB channel checked byte for byte, passes, Gzip, RecordIO read by real MXNet),
manifest files, and ShardedByS3Key across hosts."""
import gzip
import hashlib
import json
import os
import struct

from conftest import tagged, job_request, log_text, stream_texts, unique, upload_code, wait_for

GIB = 1 << 30
OBJECT = 64 << 20


def channel(name, uri, mode=None, data_type="S3Prefix", distribution="FullyReplicated", **extra):
    ch = {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": data_type, "S3Uri": uri, "S3DataDistributionType": distribution}}}
    if mode:
        ch["InputMode"] = mode
    ch.update(extra)
    return ch


BIG_READER = r'''
import hashlib, json, os, sys
path = os.path.join(os.environ["SM_INPUT_DIR"], "data", "big_0")
digest, n = hashlib.sha256(), 0
with open(path, "rb") as f:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        n += len(chunk)
print("PIPE-READ " + json.dumps({"bytes": n, "sha256": digest.hexdigest(),
                                 "next_fifo": os.path.exists(path[:-2] + "_1"),
                                 "dir_made": os.path.exists(os.environ["SM_CHANNEL_BIG"])}))
'''


def test_pipe_mode_streams_a_1gib_channel_byte_for_byte(sm, s3, logs, bucket):
    job = unique("pipe-big")
    digest = hashlib.sha256()
    for i in range(GIB // OBJECT):
        # Keys sort in upload order; the FIFO must carry them in key order.
        body = hashlib.sha256(b"%d" % i).digest() * (OBJECT // 32)
        body = bytes(b ^ (i & 0xff) for b in body[:4096]) + body[4096:]
        digest.update(body)
        s3.put_object(Bucket=bucket, Key="pipe/%s/part-%03d" % (job, i), Body=body)
    source = upload_code(s3, bucket, job, {"read.py": BIG_READER})
    req = job_request(job, bucket, source, program="read.py")
    req["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    req["InputDataConfig"] = [channel("big", "s3://%s/pipe/%s/" % (bucket, job))]
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=300)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-2000:])
    got = tagged(text, "PIPE-READ")
    assert got["bytes"] == GIB
    assert got["sha256"] == digest.hexdigest()
    # The next pass's FIFO is there once this one is read to its end; no channel directory.
    assert got["next_fifo"] is True and got["dir_made"] is False


PASSES = r'''
import gzip, json, os
import mxnet as mx
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
out = {}
# Two passes over the Gzip channel, each a FIFO of its own, decompressed on the way.
out["gz"] = [open(os.path.join(data, "gz_%d" % p), "rb").read().decode() for p in (0, 1)]
# Closing a pass early ends it: the next FIFO appears anyway.
with open(os.path.join(data, "gz_2"), "rb") as f:
    f.read(3)
import time
for _ in range(200):
    if os.path.exists(os.path.join(data, "gz_3")):
        break
    time.sleep(0.05)
out["early_close_next"] = os.path.exists(os.path.join(data, "gz_3"))
# RecordIO framing, read back by MXNet's own reader.
reader = mx.recordio.MXRecordIO(os.path.join(data, "rec_0"), "r")
records = []
while True:
    r = reader.read()
    if r is None:
        break
    records.append(r.hex())
reader.close()
out["rec"] = records
# File mode next to Pipe mode, from a manifest.
files = os.environ["SM_CHANNEL_LISTED"]
out["listed"] = sorted(os.path.relpath(os.path.join(d, f), files) for d, _, fs in os.walk(files) for f in fs)
print("PASSES " + json.dumps(out))
'''


def test_pipe_passes_gzip_recordio_and_a_manifest_channel_in_file_mode(sm, s3, logs, bucket):
    job = unique("pipe-modes")
    texts = ["alpha\n", "beta\n", "gamma\n"]
    for i, t in enumerate(texts):
        s3.put_object(Bucket=bucket, Key="%s/gz/%d.gz" % (job, i), Body=gzip.compress(t.encode() * 1000))
    magic = struct.pack("<I", 0xCED7230A)
    records = [b"one", b"", b"abcd" + magic + b"tail" + magic, os.urandom(100003)]
    for i, r in enumerate(records):
        s3.put_object(Bucket=bucket, Key="%s/rec/%d" % (job, i), Body=r)
    for name in ("a.csv", "sub/b.csv", "c.csv"):
        s3.put_object(Bucket=bucket, Key="%s/files/%s" % (job, name), Body=name.encode())
    manifest = [{"prefix": "s3://%s/%s/files/" % (bucket, job)}, "sub/b.csv", "c.csv"]
    s3.put_object(Bucket=bucket, Key="%s/manifest.json" % job, Body=json.dumps(manifest).encode())
    source = upload_code(s3, bucket, job, {"passes.py": PASSES})
    req = job_request(job, bucket, source, program="passes.py")
    req["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    req["InputDataConfig"] = [
        channel("gz", "s3://%s/%s/gz/" % (bucket, job), CompressionType="Gzip"),
        channel("rec", "s3://%s/%s/rec/" % (bucket, job), RecordWrapperType="RecordIO"),
        channel("listed", "s3://%s/%s/manifest.json" % (bucket, job), mode="File", data_type="ManifestFile"),
    ]
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=200)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    got = tagged(text, "PASSES")
    expected = "".join(t * 1000 for t in texts)
    assert got["gz"] == [expected, expected]
    assert got["early_close_next"] is True
    assert got["rec"] == [r.hex() for r in records]
    assert got["listed"] == ["c.csv", "sub/b.csv"]
    config = d["InputDataConfig"]
    assert [c["ChannelName"] for c in config] == ["gz", "rec", "listed"]


def test_gzip_in_file_mode_and_augmented_manifests_are_refused_clearly(sm, s3, bucket):
    from botocore.exceptions import ClientError
    job = unique("refused")
    source = upload_code(s3, bucket, job, {"train.py": "pass"})
    for ch, words in (
        (channel("train", "s3://%s/x/" % bucket, CompressionType="Gzip"), "Pipe"),
        (channel("train", "s3://%s/x.json" % bucket, data_type="AugmentedManifestFile"), "ManifestFile"),
    ):
        req = job_request(job, bucket, source)
        req["InputDataConfig"] = [ch]
        try:
            sm.create_training_job(**req)
            raise AssertionError("accepted %s" % ch)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
            assert words in e.response["Error"]["Message"], e.response["Error"]["Message"]
    try:
        sm.describe_training_job(TrainingJobName=job)
        raise AssertionError("a refused job was created")
    except ClientError as e:
        assert "Could not find" in e.response["Error"]["Message"] or e.response["Error"]["Code"] == "ValidationException"


LISTER = r'''
import json, os
def files(ch):
    root = os.environ["SM_CHANNEL_" + ch.upper()]
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
print("SHARD " + json.dumps({"sharded": files("sharded"), "replicated": files("replicated")}))
'''


def test_sharded_by_s3_key_gives_each_host_a_disjoint_share(sm, s3, logs, bucket):
    job = unique("shard")
    names = ["part-%02d" % i for i in range(7)]
    for n in names:
        s3.put_object(Bucket=bucket, Key="%s/data/%s" % (job, n), Body=n.encode())
    source = upload_code(s3, bucket, job, {"list.py": LISTER})
    req = job_request(job, bucket, source, program="list.py")
    req["ResourceConfig"]["InstanceCount"] = 2
    uri = "s3://%s/%s/data/" % (bucket, job)
    req["InputDataConfig"] = [channel("sharded", uri, distribution="ShardedByS3Key"), channel("replicated", uri)]
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=120)
    texts = stream_texts(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), texts)
    shares = {h: tagged(t, "SHARD")
              for h, t in texts.items()}
    a, b = shares["algo-1"]["sharded"], shares["algo-2"]["sharded"]
    assert a and b and not set(a) & set(b), (a, b)
    assert sorted(a + b) == names
    assert abs(len(a) - len(b)) <= 1
    assert shares["algo-1"]["replicated"] == names == shares["algo-2"]["replicated"]
