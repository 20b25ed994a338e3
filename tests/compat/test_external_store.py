"""The SageMaker SDK's flows, unchanged, against a Clary server whose buckets and objects live
in a real external S3 store (Ceph's RADOS Gateway on loopback, the `rgw` fixture): fit with
logs, fit then attach, two hosts with the parameter server, sharded input and checkpoints,
Pipe mode, legacy mode, deploy and predict, tuning, batch transform and processing.

Each test also looks in the store itself, with boto3 straight to radosgw: the objects are
there, under the prefixed bucket names, and radosgw's own access log shows the hosts (not the
server) fetched and stored them, with presigned URLs."""
import json
import os
import sys
import uuid

import numpy as np
import pytest

from conftest import ROOT, tagged_by_host
from test_sdk_training import V1_PYTHON, Run
from test_training import EXAMPLE, mnist_data  # noqa: F401 (a fixture)

HERE = os.path.join(ROOT, "tests", "compat", "sdk")


@pytest.fixture(scope="module")
def runs(ext_server, mnist_data):
    """Every scenario's SDK script, started at once (each waits on jobs most of its time)."""
    log_start = ext_server.rgw.log_size()
    scripts = {
        "logs": ("fit_v2.py", "logs", mnist_data),
        "attach": ("fit_v2.py", "attach", mnist_data),
        "dist": ("fit_v2.py", "dist", mnist_data),
        "pipe": ("fit_v2.py", "pipe", mnist_data),
        "deploy": ("deploy_v2.py", EXAMPLE, mnist_data, os.path.join(HERE, "inference")),
        "tune": ("tune_v2.py", "Random"),
        "transform": ("transform_v2.py", EXAMPLE, mnist_data),
        "process": ("process_v2.py", "framework"),
    }
    started = {name: Run(ext_server, sys.executable, os.path.join(HERE, args[0]), *args[1:])
               for name, args in scripts.items()}
    if os.path.exists(V1_PYTHON):
        started["v1"] = Run(ext_server, V1_PYTHON, os.path.join(HERE, "fit_v1.py"), EXAMPLE,
                            os.path.join(HERE, "legacy"), mnist_data, "sdk-v1-" + uuid.uuid4().hex[:10])
    started["log_start"] = log_start
    yield started
    for r in started.values():
        if isinstance(r, Run) and r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def store_keys(ext_server, bucket, prefix=""):
    """The keys under `prefix` of Clary's `bucket`, listed in the store itself."""
    s3 = ext_server.rgw.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ext_server.bucket_prefix + bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def split_s3(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def presigned_lines(ext_server, since, method, path):
    """radosgw's access lines for `method` on `path` (`/<store bucket>/<key>`) made with a
    presigned URL (the query carries the signature): requests a host made directly."""
    return [line for line in ext_server.rgw.requests_since(since)
            if '"%s %s?' % (method, path) in line and "X-Amz-Signature=" in line]


def test_fit_with_logs_and_the_artifact_lands_in_the_store(runs, ext_server):
    out, stdout = runs["logs"].result()
    assert "training done" in stdout and "Training seconds:" in stdout
    assert "hps.json" in out["model_files"]
    bucket, key = split_s3(out["model_data"])
    assert key in store_keys(ext_server, bucket, key)
    # The agent stored model.tar.gz itself, with a presigned PUT (or multipart), not the server.
    store_path = "/%s%s/%s" % (ext_server.bucket_prefix, bucket, key)
    puts = presigned_lines(ext_server, runs["log_start"], "PUT", store_path) + \
        presigned_lines(ext_server, runs["log_start"], "POST", store_path)
    assert puts, "no presigned upload of %s in radosgw's log" % store_path
    # The code the SDK uploaded through Clary's S3 API is in the store too.
    sm = ext_server.client("sagemaker")
    d = sm.describe_training_job(TrainingJobName=out["job"])
    source = json.loads(d["HyperParameters"]["sagemaker_submit_directory"])
    src_bucket, src_key = split_s3(source)
    assert src_key in store_keys(ext_server, src_bucket, src_key)
    # The training channels were read by the host straight from the store.
    train = next(c for c in d["InputDataConfig"] if c["ChannelName"] == "train")
    data_bucket, data_prefix = split_s3(train["DataSource"]["S3DataSource"]["S3Uri"])
    some_key = store_keys(ext_server, data_bucket, data_prefix)[0]
    get_path = "/%s%s/%s" % (ext_server.bucket_prefix, data_bucket, some_key)
    assert presigned_lines(ext_server, runs["log_start"], "GET", get_path), get_path


def test_fit_without_waiting_then_attach(runs):
    out, stdout = runs["attach"].result()
    assert out["status_before_attach"] == "InProgress"
    assert out["status_after_attach"] == "Completed"
    assert out["attached"]["model_data"] == out["model_data"]
    assert "still training, second 11" in stdout


def test_two_hosts_sharded_input_and_checkpoints_in_the_store(runs, ext_server):
    out, _ = runs["dist"].result()
    d = out["describe"]
    assert d["TrainingJobStatus"] == "Completed"
    reports = tagged_by_host(ext_server.client("logs"), out["job"], "MODES")
    parts = ["part-%d.txt" % i for i in range(6)]
    a, b = reports["algo-1"]["sharded"], reports["algo-2"]["sharded"]
    assert sorted(a + b) == parts and not set(a) & set(b)
    assert reports["algo-1"]["replicated"] == parts == reports["algo-2"]["replicated"]
    assert [u.rsplit("/", 1)[1] for u in out["checkpoints"]] == ["seen-by-algo-1.json", "seen-by-algo-2.json"]
    for uri in out["checkpoints"]:
        bucket, key = split_s3(uri)
        assert key in store_keys(ext_server, bucket, key)


def test_pipe_mode_streams_from_the_store(runs, ext_server):
    out, _ = runs["pipe"].result()
    assert out["describe"]["TrainingJobStatus"] == "Completed"
    report = tagged_by_host(ext_server.client("logs"), out["job"], "MODES")["algo-1"]
    assert [p["sha256"] for p in report["stream"]] == [out["expected"]] * 2
    assert report["files"] == ["images.npy", "labels.npy"]


def test_deploy_and_predict_from_a_model_in_the_store(runs):
    out, _ = runs["deploy"].result()
    want = np.array(out["want"])
    np.testing.assert_allclose(np.array(out["default"]), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(out["csv"], dtype=float), want, rtol=1e-4, atol=1e-5)
    assert out["instances"] == 2


def test_tuning_on_the_store(runs):
    out, _ = runs["tune"].result()
    assert out["status"] == "Completed"
    values = [r["FinalObjectiveValue"] for r in out["rows"]]
    assert len(out["rows"]) == 6 and out["best_value"] == max(v for v in values if v == v)


def test_batch_transform_on_the_store(runs):
    out, _ = runs["transform"].result()
    want = np.array(out["want"])
    joined = out["joined"]["a.csv"] + out["joined"]["b.csv"]
    assert [l.split(",")[0] for l in joined] == ["r%d" % i for i in range(40)]
    got = np.array([[float(x) for x in l.split(",")[1:]] for l in joined])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_processing_on_the_store_feeds_a_training_job(runs, ext_server):
    out, _ = runs["process"].result()
    assert out["describe"]["ProcessingJobStatus"] == "Completed"
    # The script appended to its input; the stored object kept its bytes.
    assert "999,999" not in out["raw_after"]
    for o in out["describe"]["ProcessingOutputConfig"]["Outputs"]:
        bucket, prefix = split_s3(o["S3Output"]["S3Uri"])
        assert store_keys(ext_server, bucket, prefix), "nothing in the store under %s" % o["S3Output"]["S3Uri"]
    sm = ext_server.client("sagemaker")
    assert sm.describe_training_job(TrainingJobName=out["training_job"])["TrainingJobStatus"] == "Completed"


@pytest.mark.skipif(not os.path.exists(V1_PYTHON), reason="the SDK v1 venv (scripts/test.sh builds it) is missing")
def test_sdk_v1_legacy_mode_on_the_store(runs):
    out, _ = runs["v1"].result()
    legacy = out["legacy"]
    assert legacy["status"] == "Completed", legacy
    assert legacy["model_files"] == ["model-0000.params", "model-shapes.json", "model-symbol.json"]
    assert out["status"] == "Completed"
    assert np.array(out["prediction"]).shape == (2, 10)


READER = r'''
import hashlib, json, os
base = os.environ["SM_CHANNEL_DATA"]
seen = {}
for name in sorted(os.listdir(base)):
    with open(os.path.join(base, name), "rb") as f:
        seen[name] = hashlib.sha256(f.read()).hexdigest()
print("SEEN " + json.dumps({"host": os.environ["SM_CURRENT_HOST"], "node": os.environ.get("SLURMD_NODENAME"), "files": seen}), flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w") as f:
    json.dump(seen, f)
'''


@pytest.fixture(scope="module")
def ext_cluster(rgw, tmp_path_factory):
    """A Slurm-executor server backed by the store: its agents run on the cluster's nodes."""
    from conftest import Server, external_store_args, external_store_env
    from test_slurm import slurm_nodes
    nodes, why = slurm_nodes()
    if nodes is None:
        pytest.skip(why)
    prefix = "clary-%s-" % uuid.uuid4().hex[:8]
    s = Server(tmp_path_factory.mktemp("slurm-ext"), extra_args=[
        "--executor", "slurm", "--slurm-node-dir", str(tmp_path_factory.mktemp("nodes")),
        *external_store_args(rgw, prefix)], env=external_store_env(rgw)).start()
    s.bucket_prefix = prefix
    s.rgw = rgw
    yield s
    s.stop()


def test_a_two_node_slurm_job_reads_and_writes_the_store_directly(ext_cluster):
    import hashlib
    from conftest import job_request, unique, upload_code, wait_for
    sm, s3, logs = ext_cluster.client("sagemaker"), ext_cluster.client("s3"), ext_cluster.client("logs")
    bucket = unique("slurm-ext")
    s3.create_bucket(Bucket=bucket)
    job = unique("ext2")
    objects = {"part-%d.bin" % i: os.urandom(300_000 + i) for i in range(4)}
    # The data goes into the store straight, not through Clary: what a team's store holds already.
    store = ext_cluster.rgw.client()
    for name, data in objects.items():
        store.put_object(Bucket=ext_cluster.bucket_prefix + bucket, Key="in/%s/%s" % (job, name), Body=data)
    since = ext_cluster.rgw.log_size()
    req = job_request(job, bucket, upload_code(s3, bucket, job, {"read.py": READER}), program="read.py",
                      channels={"data": "s3://%s/in/%s/" % (bucket, job)})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    reports = tagged_by_host(logs, job, "SEEN")
    assert sorted(reports) == ["algo-1", "algo-2"]
    want = {name: hashlib.sha256(data).hexdigest() for name, data in objects.items()}
    for host, r in reports.items():
        assert r["files"] == want, host
    assert sorted(r["node"] for r in reports.values()) == sorted({r["node"] for r in reports.values()})
    # radosgw served each object to both hosts itself, on presigned URLs: two GETs per object.
    for name in objects:
        path = "/%s%s/in/%s/%s" % (ext_cluster.bucket_prefix, bucket, job, name)
        assert len(presigned_lines(ext_cluster, since, "GET", path)) >= 2, path
    # The artifact went from the node to the store directly too, and is whole there.
    out_bucket, out_key = split_s3(d["ModelArtifacts"]["S3ModelArtifacts"])
    path = "/%s%s/%s" % (ext_cluster.bucket_prefix, out_bucket, out_key)
    assert presigned_lines(ext_cluster, since, "PUT", path) + presigned_lines(ext_cluster, since, "POST", path)
    assert store.head_object(Bucket=ext_cluster.bucket_prefix + out_bucket, Key=out_key)["ContentLength"] > 0


ANCESTRY = r'''
import json, os
def parent(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
found, pid = {}, os.getpid()
while pid > 1:
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            found[pid] = [v.decode(errors="replace") for v in f.read().split(b"\0") if v]
    except OSError:
        pass
    pid = parent(pid)
print("ANCESTRY " + json.dumps({"env": dict(os.environ), "ancestors": found}), flush=True)
'''


def test_no_host_process_inherits_the_stores_key_pair(ext_server):
    """The server got the store's secret in its environment; the host's agent and the user's
    script (its descendants) must not have it: they reach the store with presigned URLs."""
    from conftest import job_request, unique, upload_code, wait_for
    sm, s3 = ext_server.client("sagemaker"), ext_server.client("s3")
    bucket = unique("ext-env")
    s3.create_bucket(Bucket=bucket)
    job = unique("ancestry")
    sm.create_training_job(**job_request(job, bucket, upload_code(s3, bucket, job, {"a.py": ANCESTRY}), program="a.py"))
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    report = tagged_by_host(ext_server.client("logs"), job, "ANCESTRY")["algo-1"]
    secret = ext_server.rgw.secret_key
    assert secret not in json.dumps(report["env"])
    leaked = [pid for pid, env in report["ancestors"].items()
              if int(pid) != ext_server.proc.pid and any(secret in v for v in env)]
    assert not leaked, "processes of the job's host hold the store's secret: %s" % leaked
    assert len(report["ancestors"]) >= 2  # the script and at least its agent were read
