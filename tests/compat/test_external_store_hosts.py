"""Training hosts on a server backed by an external S3 store (Ceph's RADOS Gateway, the `rgw`
fixture) read and write the store directly, with URLs the server presigns for each request:
a File-mode channel of many objects and one large object (fetched in parallel ranges), Pipe
mode, ShardedByS3Key over two hosts, checkpoints written by one job and resumed by the next, a
model.tar.gz uploaded in parts, a scoped key refused a presigned write outside its grants, and
an input object that is gone failing the job with a reason that names the store, the object
and the error.

Test data goes straight into the store with boto3 (Clary's bucket `b` is the store's
`<bucket_prefix>b`), results are checked there, and that the hosts went to the store directly
is read from radosgw's own access log: a presigned request carries `X-Amz-Signature` in its
query, and a ranged GET's line ends with its `bytes=a-b`."""
import hashlib
import io
import json
import os
import re
import tarfile
import time
import uuid

import pytest

from conftest import (INFERENCE_IMAGE, ROLE, endpoint_log, job_request, log_text, tagged, tagged_by_host,
                      tar_gz, unique, wait_endpoint, wait_for)

MIB = 1 << 20

SIGV4 = r'''
import datetime, hashlib, hmac, json, os, urllib.error, urllib.request

def agent_call(op, body):
    """A ClaryAgent call signed with this job's own (scoped) key, with the standard library."""
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/"
    host = url.split("://", 1)[1].split("/", 1)[0]
    region, service = os.environ["AWS_REGION"], "clary"
    payload = json.dumps(body).encode()
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz_date,
               "x-amz-target": "ClaryAgent." + op,
               "x-amz-content-sha256": hashlib.sha256(payload).hexdigest()}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", "", "".join("%s:%s\n" % (k, headers[k]) for k in sorted(headers)),
                           signed, headers["x-amz-content-sha256"]])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        os.environ["AWS_ACCESS_KEY_ID"], scope, signed, sig)
    req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
'''

HASH_TREE = r'''
import hashlib, json, os
def hash_tree(root):
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out
'''


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def store(ext_server):
    """A bucket of Clary's made in the store itself: (Clary's name, the store's, boto3 on the
    store)."""
    bucket = "hosts-" + uuid.uuid4().hex[:10]
    s3 = ext_server.rgw.client()
    s3.create_bucket(Bucket=ext_server.bucket_prefix + bucket)
    return bucket, ext_server.bucket_prefix + bucket, s3


def put_code(store, job, script):
    """`train.py` as sourcedir.tar.gz in the store; its URI in Clary's names."""
    bucket, store_bucket, s3 = store
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("train.py")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    key = "%s/source/sourcedir.tar.gz" % job
    s3.put_object(Bucket=store_bucket, Key=key, Body=buf.getvalue())
    return "s3://%s/%s" % (bucket, key)


def channel(name, uri, mode="File", data_type="S3Prefix", distribution="FullyReplicated"):
    return {"ChannelName": name, "InputMode": mode,
            "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": uri,
                                            "S3DataDistributionType": distribution}}}


def run_job(ext_server, store, script, channels=(), count=1, checkpoint=None, job=None, timeout=240):
    """Runs a training job of `script`; returns (describe, its whole log, the radosgw access lines
    logged meanwhile)."""
    bucket = store[0]
    job = job or unique("ext-hosts")
    since = ext_server.rgw.log_size()
    req = job_request(job, bucket, put_code(store, job, script))
    req["ResourceConfig"]["InstanceCount"] = count
    if channels:
        req["InputDataConfig"] = list(channels)
    if checkpoint:
        req["CheckpointConfig"] = {"S3Uri": checkpoint}
    sm = ext_server.client("sagemaker")
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=timeout)
    return d, log_text(ext_server.client("logs"), job), ext_server.rgw.requests_since(since)


def presigned(lines, method, path):
    """Access lines of `method` requests on `path` (the store's `/bucket/key`) made with a
    presigned URL: a host's own requests, not the server's."""
    return [l for l in lines if '"%s %s?' % (method, path) in l and "X-Amz-Signature=" in l]


def ranges_of(lines):
    """The `bytes=a-b` ranges of access lines, as (a, b)."""
    out = []
    for l in lines:
        m = re.search(r" bytes=(\d+)-(\d+) ", l)
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


FILE_SCRIPT = HASH_TREE + r'''
print("STAGED " + json.dumps(hash_tree(os.environ["SM_CHANNEL_TRAIN"])))
'''


def test_a_file_channel_of_many_objects_and_a_large_one_is_staged_byte_exact(ext_server, store):
    bucket, store_bucket, s3 = store
    prefix = "many-" + uuid.uuid4().hex[:6]
    want = {}
    for i in range(300):
        data = os.urandom(1000 + 97 * i)
        name = "part-%03d/rec %d.bin" % (i % 7, i)
        s3.put_object(Bucket=store_bucket, Key="%s/%s" % (prefix, name), Body=data)
        want[name] = sha(data)
    big = os.urandom(37 * MIB + 12345)
    s3.put_object(Bucket=store_bucket, Key="%s/big.bin" % prefix, Body=big)
    want["big.bin"] = sha(big)
    s3.put_object(Bucket=store_bucket, Key="%s/empty" % prefix, Body=b"")
    want["empty"] = sha(b"")

    d, text, lines = run_job(ext_server, store, FILE_SCRIPT,
                             [channel("train", "s3://%s/%s" % (bucket, prefix))])
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert tagged(text, "STAGED") == want
    assert "Objects come directly from the object store at %s" % ext_server.rgw.endpoint in text
    # Each object came from the store itself with a presigned GET.
    for name in ("part-000/rec 0.bin", "part-005/rec 299.bin", "empty"):
        path = "/%s/%s/%s" % (store_bucket, prefix, name.replace(" ", "%20"))
        assert presigned(lines, "GET", path), path
    # The large one in 8 MiB ranges that cover it exactly, fetched several at once.
    ranges = ranges_of(presigned(lines, "GET", "/%s/%s/big.bin" % (store_bucket, prefix)))
    assert ranges[0] == (0, 8 * MIB - 1)
    assert len(ranges) == 5 and ranges[-1][1] >= len(big) - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), ranges


PIPE_SCRIPT = r'''
import hashlib, json, os
data = open(os.path.join(os.environ["SM_INPUT_DIR"], "data", "stream_0"), "rb").read()
print("PIPE " + json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}))
'''


def test_pipe_mode_streams_straight_from_the_store(ext_server, store):
    bucket, store_bucket, s3 = store
    prefix = "pipe-" + uuid.uuid4().hex[:6]
    parts = [os.urandom(n) for n in (5 * MIB + 3, 1, 2 * MIB)]
    for i, data in enumerate(parts):
        s3.put_object(Bucket=store_bucket, Key="%s/%d" % (prefix, i), Body=data)
    d, text, lines = run_job(ext_server, store, PIPE_SCRIPT,
                             [channel("stream", "s3://%s/%s/" % (bucket, prefix), mode="Pipe")])
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    joined = b"".join(parts)
    assert tagged(text, "PIPE") == {"sha256": sha(joined), "size": len(joined)}
    for i in range(3):
        assert presigned(lines, "GET", "/%s/%s/%d" % (store_bucket, prefix, i)), i


SHARD_SCRIPT = HASH_TREE + r'''
print("SHARD " + json.dumps(hash_tree(os.environ["SM_CHANNEL_TRAIN"])))
'''


def test_sharded_by_s3_key_deals_the_objects_out_to_two_hosts(ext_server, store):
    bucket, store_bucket, s3 = store
    prefix = "shard-" + uuid.uuid4().hex[:6]
    want = {}
    for i in range(9):
        data = os.urandom(500 + i)
        s3.put_object(Bucket=store_bucket, Key="%s/%d.rec" % (prefix, i), Body=data)
        want["%d.rec" % i] = sha(data)
    job = unique("ext-shard")
    d, text, lines = run_job(ext_server, store, SHARD_SCRIPT, count=2, job=job, channels=[
        channel("train", "s3://%s/%s" % (bucket, prefix), distribution="ShardedByS3Key")])
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    shares = tagged_by_host(ext_server.client("logs"), job, "SHARD")
    a, b = shares["algo-1"], shares["algo-2"]
    assert a and b and not set(a) & set(b)
    assert {**a, **b} == want
    assert sum(bool(presigned(lines, "GET", "/%s/%s/%d.rec" % (store_bucket, prefix, i)))
               for i in range(9)) == 9


CHECKPOINT_SCRIPT = r'''
import hashlib, json, os
ckpt = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints")
seen = {f: hashlib.sha256(open(os.path.join(ckpt, f), "rb").read()).hexdigest() for f in sorted(os.listdir(ckpt))}
epoch = 1 + max([int(open(os.path.join(ckpt, "epoch")).read())] if "epoch" in seen else [0])
with open(os.path.join(ckpt, "epoch"), "w") as f:
    f.write(str(epoch))
with open(os.path.join(ckpt, "weights-%d.bin" % epoch), "wb") as f:
    f.write(hashlib.sha256(b"%d" % epoch).digest() * (WEIGHTS_SIZE // 32))
# An incompressible model of several parts' worth.
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.bin"), "wb") as f:
    f.write(os.urandom(MODEL_SIZE))
print("CKPT " + json.dumps({"seen": seen, "epoch": epoch}))
'''


def test_checkpoints_go_to_the_store_and_the_next_job_resumes_from_them(ext_server, store):
    bucket, store_bucket, s3 = store
    uri = "s3://%s/ckpt/%s" % (bucket, uuid.uuid4().hex[:8])
    script = CHECKPOINT_SCRIPT.replace("WEIGHTS_SIZE", str(12 * MIB)).replace("MODEL_SIZE", "1024")
    d1, text1, lines1 = run_job(ext_server, store, script, checkpoint=uri)
    assert d1["TrainingJobStatus"] == "Completed", (d1.get("FailureReason"), text1[-3000:])
    assert tagged(text1, "CKPT") == {"seen": {}, "epoch": 1}
    prefix = uri.split("/", 3)[3]
    stored = {o["Key"][len(prefix) + 1:]: o for o in
              s3.list_objects_v2(Bucket=store_bucket, Prefix=prefix + "/")["Contents"]}
    assert sorted(stored) == ["epoch", "weights-1.bin"]
    # The 12 MiB checkpoint went up in parts, straight from the host.
    assert stored["weights-1.bin"]["ETag"].strip('"').endswith("-2"), stored["weights-1.bin"]
    weights_path = "/%s/%s/weights-1.bin" % (store_bucket, prefix)
    assert presigned(lines1, "POST", weights_path), "no presigned CreateMultipartUpload"
    weights = s3.get_object(Bucket=store_bucket, Key=prefix + "/weights-1.bin")["Body"].read()
    assert weights == hashlib.sha256(b"1").digest() * (12 * MIB // 32)

    d2, text2, lines2 = run_job(ext_server, store, script, checkpoint=uri)
    assert d2["TrainingJobStatus"] == "Completed", (d2.get("FailureReason"), text2[-3000:])
    report = tagged(text2, "CKPT")
    assert report["epoch"] == 2
    assert report["seen"] == {"epoch": sha(b"1"), "weights-1.bin": sha(weights)}
    assert presigned(lines2, "GET", weights_path), "the resumed job did not fetch its checkpoint itself"
    assert s3.get_object(Bucket=store_bucket, Key=prefix + "/epoch")["Body"].read() == b"2"


def test_the_model_goes_up_in_parts_straight_to_the_store(ext_server, store):
    bucket, store_bucket, s3 = store
    script = CHECKPOINT_SCRIPT.replace("WEIGHTS_SIZE", "32").replace("MODEL_SIZE", str(21 * MIB))
    d, text, lines = run_job(ext_server, store, script)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    model = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert model.startswith("s3://%s/" % bucket)
    key = model.split("/", 3)[3]
    head = s3.head_object(Bucket=store_bucket, Key=key)
    # 21 MiB of random bytes do not compress: three 8 MiB parts.
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    assert head["ContentLength"] > 21 * MIB
    path = "/%s/%s" % (store_bucket, key)
    parts = [l for l in presigned(lines, "PUT", path) if "partNumber=" in l]
    assert len(parts) == 3, parts
    assert presigned(lines, "POST", path)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=store_bucket, Key=key)["Body"].read())) as tar:
        assert tar.getmember("model.bin").size == 21 * MIB
    # Nothing was left half-uploaded.
    assert not s3.list_multipart_uploads(Bucket=store_bucket, Prefix=key).get("Uploads")


SCOPE_SCRIPT = SIGV4 + r'''
bucket, job = os.environ["OUT_BUCKET"], os.environ["TRAINING_JOB_NAME"]
def ask(method, key, query=""):
    req = {"Method": method, "Bucket": bucket, "Key": key}
    if query:
        req["Query"] = query
    return agent_call("PresignObjectRequests", {"Requests": [req]})
own = ask("PUT", "output/%s/output/extra.txt" % job)
other = ask("PUT", "output/someone-else/output/model.tar.gz")
other_mp = ask("POST", "output/someone-else/output/model.tar.gz", "uploads")
read = ask("GET", "%s/source/sourcedir.tar.gz" % job)
written = None
if own[0] == 200:
    r = urllib.request.Request(own[1]["Urls"][0], data=b"written directly", method="PUT")
    written = urllib.request.urlopen(r).status
print("SCOPE " + json.dumps({"own": own[0], "other": other, "other_mp": other_mp[0], "read": read[0],
                             "store": own[1].get("Store"), "written": written}))
'''


def test_a_jobs_key_may_not_have_another_jobs_output_presigned(ext_server, store):
    bucket, store_bucket, s3 = store
    job = unique("ext-scope")
    script = SCOPE_SCRIPT.replace('os.environ["OUT_BUCKET"]', repr(bucket))
    d, text, _ = run_job(ext_server, store, script, job=job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    r = tagged(text, "SCOPE")
    assert (r["own"], r["read"], r["written"]) == (200, 200, 200), r
    assert r["store"] == ext_server.rgw.endpoint
    status, err = r["other"]
    assert status == 403 and err["__type"] == "AccessDenied", r
    assert "s3://%s/output/someone-else/output/model.tar.gz" % bucket in err["message"]
    assert "training job %s" % job in err["message"]
    assert r["other_mp"] == 403
    assert s3.get_object(Bucket=store_bucket, Key="output/%s/output/extra.txt" % job)["Body"].read() == b"written directly"
    assert "output/someone-else/output/model.tar.gz" not in [
        o["Key"] for o in s3.list_objects_v2(Bucket=store_bucket, Prefix="output/someone-else/").get("Contents", [])]


def test_an_input_object_that_is_gone_fails_the_job_naming_the_store_the_object_and_the_error(ext_server, store):
    bucket, store_bucket, s3 = store
    prefix = "gone-" + uuid.uuid4().hex[:6]
    s3.put_object(Bucket=store_bucket, Key=prefix + "/here.bin", Body=b"here")
    # Listed in the manifest, never (or no longer) in the store.
    manifest = [{"prefix": "s3://%s/%s/" % (bucket, prefix)}, "here.bin", "vanished.bin"]
    s3.put_object(Bucket=store_bucket, Key=prefix + "/manifest.json", Body=json.dumps(manifest).encode())
    d, text, lines = run_job(ext_server, store, FILE_SCRIPT, [
        channel("train", "s3://%s/%s/manifest.json" % (bucket, prefix), data_type="ManifestFile")])
    assert d["TrainingJobStatus"] == "Failed", d
    reason = d["FailureReason"]
    assert "reading s3://%s/%s/vanished.bin from the object store at %s" % (
        bucket, prefix, ext_server.rgw.endpoint) in reason, reason
    assert "HTTP 404 NoSuchKey" in reason, reason
    assert "channel train" in reason, reason
    # The host asked the store itself, and was told so.
    assert [l for l in presigned(lines, "GET", "/%s/%s/vanished.bin" % (store_bucket, prefix)) if '" 404 ' in l]


HANDLER = r'''
import json, os
def model_fn(model_dir):
    return {"scale": float(open(os.path.join(model_dir, "scale.txt")).read())}
def transform_fn(model, data, content_type, accept):
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    if text.lstrip().startswith("["):
        return json.dumps([v * model["scale"] for v in json.loads(text)]), "application/json"
    return "".join("%r\n" % (float(l) * model["scale"]) for l in text.splitlines() if l.strip()), "text/csv"
'''


def put_model(ext_server, store, name):
    """model.tar.gz (a handler and its `scale`) in the store; a model of Clary's pointing at it."""
    bucket, store_bucket, s3 = store
    key = "models/%s/model.tar.gz" % name
    s3.put_object(Bucket=store_bucket, Key=key, Body=tar_gz({"code/inference.py": HANDLER, "scale.txt": "3"}))
    ext_server.client("sagemaker").create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": INFERENCE_IMAGE, "ModelDataUrl": "s3://%s/%s" % (bucket, key)})
    return "/%s/%s" % (store_bucket, key)


def test_an_endpoint_reads_its_model_straight_from_the_store(ext_server, store):
    name = unique("ext-endpoint")
    since = ext_server.rgw.log_size()
    model_path = put_model(ext_server, store, name)
    sm = ext_server.client("sagemaker")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        d = wait_endpoint(sm, name)
        text = endpoint_log(ext_server.client("logs"), name)
        assert d["EndpointStatus"] == "InService", (d.get("FailureReason"), text[-3000:])
        rt = ext_server.client("sagemaker-runtime", read_timeout=70)
        r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1, 2]")
        assert json.loads(r["Body"].read()) == [3.0, 6.0]
        # The instance fetched model.tar.gz itself, with its own presigned GET.
        assert presigned(ext_server.rgw.requests_since(since), "GET", model_path)
        assert "objects come directly from the object store at %s" % ext_server.rgw.endpoint in text
    finally:
        sm.delete_endpoint(EndpointName=name)


def test_a_transform_job_and_its_model_server_use_the_store_directly(ext_server, store):
    bucket, store_bucket, s3 = store
    name = unique("ext-transform")
    model_path = put_model(ext_server, store, name)
    s3.put_object(Bucket=store_bucket, Key="tin/%s/a.csv" % name, Body=b"1\n2\n")
    s3.put_object(Bucket=store_bucket, Key="tin/%s/b.csv" % name, Body=b"10\n")
    since = ext_server.rgw.log_size()
    sm = ext_server.client("sagemaker")
    sm.create_transform_job(
        TransformJobName=name, ModelName=name,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                         "S3Uri": "s3://%s/tin/%s/" % (bucket, name)}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://%s/tout/%s" % (bucket, name), "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 180
    while True:
        d = sm.describe_transform_job(TransformJobName=name)
        if d["TransformJobStatus"] in ("Completed", "Failed", "Stopped") or time.time() > deadline:
            break
        time.sleep(0.3)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = lambda k: s3.get_object(Bucket=store_bucket, Key="tout/%s/%s" % (name, k))["Body"].read()
    assert (out("a.csv.out"), out("b.csv.out")) == (b"3.0\n6.0\n", b"30.0\n")
    lines = ext_server.rgw.requests_since(since)
    assert presigned(lines, "GET", model_path), "the model server did not fetch the model itself"
    assert presigned(lines, "GET", "/%s/tin/%s/a.csv" % (store_bucket, name))
    assert presigned(lines, "PUT", "/%s/tout/%s/a.csv.out" % (store_bucket, name))
