"""A server whose training hosts reach the objects over its S3 API instead of its disk
(`--agent-objects http`, what a host on another machine needs): code, File, Pipe and manifest
channels, checkpoints both ways and the artifacts all travel over HTTP, with keys that need
escaping."""
import io
import json
import tarfile

import pytest

from conftest import tagged, Server, job_request, log_text, unique, upload_code, wait_for

SCRIPT = r'''
import json, os
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
train = os.environ["SM_CHANNEL_TRAIN"]
files = {}
for d, _, fs in os.walk(train):
    for f in fs:
        p = os.path.join(d, f)
        files[os.path.relpath(p, train)] = {"body": open(p).read(), "links": os.stat(p).st_nlink}
ckpt = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints")
report = {
    "files": files,
    "listed": sorted(os.listdir(os.environ["SM_CHANNEL_LISTED"])),
    "stream": open(os.path.join(data, "stream_0"), "rb").read().decode(),
    "seeded": {f: open(os.path.join(ckpt, f)).read() for f in os.listdir(ckpt)},
}
with open(os.path.join(ckpt, "new & improved.txt"), "w") as f:
    f.write("from the job")
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump(report, f)
print("REMOTE " + json.dumps(report, sort_keys=True))
'''


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("remote"), extra_args=["--agent-objects", "http"]).start()
    yield s
    s.stop()


def test_every_object_path_works_over_the_s3_api(remote):
    sm, s3, logs = remote.client("sagemaker"), remote.client("s3"), remote.client("logs")
    bucket = unique("remote")
    s3.create_bucket(Bucket=bucket)
    job = unique("remote-job")
    names = {"a.txt": "alpha", "sub/with space+plus&amp.txt": "beta", "ünï.txt": "gamma"}
    for name, body in names.items():
        s3.put_object(Bucket=bucket, Key="train/" + name, Body=body.encode())
    s3.put_object(Bucket=bucket, Key="stream/1", Body=b"one ")
    s3.put_object(Bucket=bucket, Key="stream/2", Body=b"two")
    manifest = [{"prefix": "s3://%s/train/" % bucket}, "a.txt", "ünï.txt"]
    s3.put_object(Bucket=bucket, Key="manifest.json", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket=bucket, Key="ckpt/%s/old state.txt" % job, Body=b"from before")
    source = upload_code(s3, bucket, job, {"train.py": SCRIPT})
    req = job_request(job, bucket, source)
    req["InputDataConfig"] = [
        {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://%s/train" % bucket}}},
        {"ChannelName": "stream", "InputMode": "Pipe",
         "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://%s/stream/" % bucket}}},
        {"ChannelName": "listed", "DataSource": {"S3DataSource": {
            "S3DataType": "ManifestFile", "S3Uri": "s3://%s/manifest.json" % bucket}}},
    ]
    req["CheckpointConfig"] = {"S3Uri": "s3://%s/ckpt/%s" % (bucket, job)}
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=120)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert "Objects travel over the S3 API at " + remote.url in text
    report = tagged(text, "REMOTE")
    assert {k: v["body"] for k, v in report["files"].items()} == names
    # Downloaded, not hard-linked from the store's files.
    assert {v["links"] for v in report["files"].values()} == {1}
    assert report["listed"] == ["a.txt", "ünï.txt"]
    assert report["stream"] == "one two"
    assert report["seeded"] == {"old state.txt": "from before"}
    assert s3.get_object(Bucket=bucket, Key="ckpt/%s/new & improved.txt" % job)["Body"].read() == b"from the job"
    key = d["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert json.load(tar.extractfile("model.json")) == report
