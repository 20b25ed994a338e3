"""Training jobs and endpoints on a real Slurm cluster (`clary server --executor slurm`), driven
by boto3. `scripts/test.sh` brings the cluster up with `scripts/slurm.sh up 2` (two nodes on
loopback); these tests skip, saying why, only where Slurm cannot start."""
import json
import os
import subprocess
import time

import pytest

from conftest import (CLARY, Server, deploy, job_request, log_text, stream_texts, tagged_by_host, unique, upload_code,
                      wait_endpoint, wait_for)
from test_training import EXAMPLE, mnist_data, upload_dir  # noqa: F401 (fixture)


def slurm_nodes():
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "sinfo could not run (%s): install Slurm or run scripts/slurm.sh up 2 as root" % e
    if out.returncode != 0:
        return None, "sinfo failed: %s; start the cluster with scripts/slurm.sh up 2" % out.stderr.strip()
    nodes = [l.split() for l in out.stdout.splitlines() if l.strip()]
    usable = [n for n, state in nodes if state in ("idle", "mixed", "allocated")]
    if len(usable) < 2:
        return None, "Slurm has %d usable nodes (%s); these tests need 2 (scripts/slurm.sh up 2)" % (len(usable), nodes)
    return usable, None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes, why = slurm_nodes()
    if nodes is None:
        pytest.skip(why)
    s = Server(tmp_path_factory.mktemp("slurm"), extra_args=["--executor", "slurm",
                                                               "--slurm-node-dir", str(tmp_path_factory.mktemp("nodes"))]).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clients(cluster):
    sm, s3, logs = cluster.client("sagemaker"), cluster.client("s3"), cluster.client("logs")
    bucket = unique("slurm")
    s3.create_bucket(Bucket=bucket)
    return sm, s3, logs, bucket


def slurm_id(d):
    msgs = [t["StatusMessage"] for t in d["SecondaryStatusTransitions"]]
    return int(next(m for m in msgs if "Slurm job " in m).rsplit("Slurm job ", 1)[1].split()[0])


def scontrol(job_id):
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


PROBE = r'''
import json, os, socket, sys, time
me = os.environ["SM_CURRENT_HOST"]
print("PROBE " + json.dumps({"me": me, "hosts": json.loads(os.environ["SM_HOSTS"]),
                             "slurm_job": os.environ.get("SLURM_JOB_ID"), "node": os.environ.get("SLURMD_NODENAME"),
                             "resolves": {h: socket.gethostbyname(h) for h in json.loads(os.environ["SM_HOSTS"])},
                             "base": os.environ["SAGEMAKER_BASE_DIR"]}), flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "who.txt"), "w") as f:
    f.write(me)
if os.environ.get("SLEEP"):
    time.sleep(float(os.environ["SLEEP"]))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
'''


def test_one_and_two_host_jobs_run_one_agent_per_node(clients, cluster):
    sm, s3, logs, bucket = clients
    jobs = {}
    for count in (1, 2):
        job = unique("slurm%d" % count)
        req = job_request(job, bucket, upload_code(s3, bucket, job, {"probe.py": PROBE}), program="probe.py")
        req["ResourceConfig"]["InstanceCount"] = count
        sm.create_training_job(**req)
        jobs[count] = job
    for count, job in jobs.items():
        d = wait_for(sm, job, timeout=120)
        assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), log_text(logs, job)[-2000:])
        p = tagged_by_host(logs, job, "PROBE")
        assert sorted(p) == ["algo-%d" % i for i in range(1, count + 1)]
        sid = slurm_id(d)
        assert {x["slurm_job"] for x in p.values()} == {str(sid)}
        # Host algo-i is the job's i-th node, and every host name resolves on every host.
        nodes = subprocess.run(["scontrol", "show", "hostnames", scontrol(sid)["NodeList"]],
                               capture_output=True, text=True).stdout.split()
        for host, x in p.items():
            assert x["node"] == nodes[int(host.split("-")[1]) - 1]
            assert sorted(x["resolves"]) == x["hosts"]
            # Node-local directories, not the server's data dir.
            assert not x["base"].startswith(cluster.data_dir)
        assert scontrol(sid)["JobState"] == "COMPLETED"
        assert d["ModelArtifacts"]["S3ModelArtifacts"].endswith("/%s/output/model.tar.gz" % job)


def test_parameter_server_dist_sync_across_two_nodes(clients, mnist_data):
    sm, s3, logs, bucket = clients
    job = unique("slurm-ps")
    source = upload_code(s3, bucket, job, {"train.py": open(os.path.join(EXAMPLE, "train.py")).read()})
    channels = {c: upload_dir(s3, bucket, os.path.join(mnist_data, c), "data/%s/%s" % (job, c)) for c in ("train", "test")}
    req = job_request(job, bucket, source, channels=channels, hps={
        "epochs": "1", "kvstore": '"dist_sync"', "sagemaker_parameter_server_enabled": "true"})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=300)
    texts = stream_texts(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), {h: t[-2000:] for h, t in texts.items()})
    for host, text in texts.items():
        line = next(l for l in text.splitlines() if l.startswith("kvstore dist_sync"))
        assert "num_workers 2" in line and host in line, line
    # DMLC_PS_ROOT_URI is the first node's address.
    node_addr = subprocess.run(["scontrol", "show", "node", "-o", "n1"], capture_output=True, text=True).stdout
    first = dict(kv.split("=", 1) for kv in node_addr.split() if "=" in kv)["NodeAddr"]
    assert "scheduler %s:8000" % first in texts["algo-1"]


def test_failing_job_brings_back_exit_code_and_reason(clients):
    sm, s3, logs, bucket = clients
    job = unique("slurm-fail")
    req = job_request(job, bucket, upload_code(s3, bucket, job, {"probe.py": PROBE}), program="probe.py")
    req["Environment"] = {"EXIT_CODE": "3"}
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    assert "ExitCode 3" in d["FailureReason"] and "probe.py" in d["FailureReason"], d["FailureReason"]


def test_stop_and_max_runtime_end_the_slurm_job(clients):
    sm, s3, logs, bucket = clients
    stop, slow = unique("slurm-stop"), unique("slurm-maxrt")
    for job, max_run in ((stop, 600), (slow, 3)):
        req = job_request(job, bucket, upload_code(s3, bucket, job, {"probe.py": PROBE}), program="probe.py", max_run=max_run)
        req["Environment"] = {"SLEEP": "300"}
        sm.create_training_job(**req)
    deadline = time.time() + 60
    while time.time() < deadline and sm.describe_training_job(TrainingJobName=stop)["SecondaryStatus"] != "Training":
        time.sleep(0.2)
    sm.stop_training_job(TrainingJobName=stop)
    d = wait_for(sm, stop, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped", d.get("FailureReason")
    assert "Stop requested" in log_text(logs, stop)
    d = wait_for(sm, slow, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped" and d["SecondaryStatus"] == "MaxRuntimeExceeded", d
    for job in (stop, slow):
        sid = slurm_id(sm.describe_training_job(TrainingJobName=job))
        deadline = time.time() + 30
        while time.time() < deadline and scontrol(sid)["JobState"] in ("RUNNING", "COMPLETING"):
            time.sleep(0.2)
        assert scontrol(sid)["JobState"] in ("COMPLETED", "CANCELLED", "FAILED"), scontrol(sid)


def test_a_job_submitted_while_the_cluster_is_full_pends_then_runs(clients):
    sm, s3, logs, bucket = clients
    big, small = unique("slurm-big"), unique("slurm-small")
    req = job_request(big, bucket, upload_code(s3, bucket, big, {"probe.py": PROBE}), program="probe.py")
    req["ResourceConfig"]["InstanceCount"] = 2
    req["Environment"] = {"SLEEP": "6"}
    sm.create_training_job(**req)
    deadline = time.time() + 60
    while time.time() < deadline and sm.describe_training_job(TrainingJobName=big)["SecondaryStatus"] != "Training":
        time.sleep(0.2)
    req = job_request(small, bucket, upload_code(s3, bucket, small, {"probe.py": PROBE}), program="probe.py")
    sm.create_training_job(**req)
    seen_pending = None
    deadline = time.time() + 60
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=small)
        msg = d["SecondaryStatusTransitions"][-1]["StatusMessage"]
        # Slurm gives its reason once the scheduler has looked at the job.
        if "pending in Slurm" in msg and "not yet scheduled" not in msg:
            seen_pending = msg
            break
        time.sleep(0.2)
    assert seen_pending and ("(Resources)" in seen_pending or "(Priority)" in seen_pending), seen_pending
    assert sm.describe_training_job(TrainingJobName=big)["TrainingJobStatus"] == "InProgress"
    assert wait_for(sm, small, timeout=120)["TrainingJobStatus"] == "Completed"
    assert wait_for(sm, big, timeout=120)["TrainingJobStatus"] == "Completed"
    # It started only after the big job let go of the nodes.
    small_start = scontrol(slurm_id(sm.describe_training_job(TrainingJobName=small)))["StartTime"]
    big_end = scontrol(slurm_id(sm.describe_training_job(TrainingJobName=big)))["EndTime"]
    assert small_start >= big_end, (small_start, big_end)


TRANSFORM = '''
import json, os
def model_fn(model_dir):
    return "model"
def transform_fn(model, data, content_type, accept):
    return json.dumps({"got": json.loads(data), "node": os.environ.get("SLURMD_NODENAME")}), "application/json"
'''


def test_endpoint_on_slurm_answers_and_a_lost_instance_is_replaced(clients, cluster):
    sm, s3, logs, bucket = clients
    rt = cluster.client("sagemaker-runtime", read_timeout=70)
    name = unique("slurm-ep")
    deploy(sm, s3, bucket, name, {"code/inference.py": TRANSFORM})
    assert wait_endpoint(sm, name, timeout=180)["EndpointStatus"] == "InService"
    answer = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body="[1, 2]")["Body"].read())
    assert answer["got"] == [1, 2] and answer["node"] in ("n1", "n2")
    status = subprocess.run([CLARY, "cluster", "status"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in status.splitlines() if "endpoint instance " + name in l)
    first_id = line.split()[0]
    # The instance's Slurm job goes away: the endpoint replaces it and answers again.
    subprocess.run(["scancel", first_id], check=True)
    deadline = time.time() + 120
    answered = None
    while time.time() < deadline:
        status = subprocess.run([CLARY, "cluster", "status"], capture_output=True, text=True, check=True).stdout
        ids = [l.split()[0] for l in status.splitlines() if "endpoint instance " + name in l and "RUNNING" in l]
        if ids and ids != [first_id]:
            try:
                answered = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="application/json",
                                                         Body="[3]")["Body"].read())
                break
            except Exception:  # noqa: BLE001 - still starting
                pass
        time.sleep(0.5)
    assert answered and answered["got"] == [3], answered
    sm.delete_endpoint(EndpointName=name)
    deadline = time.time() + 60
    while time.time() < deadline:
        status = subprocess.run([CLARY, "cluster", "status"], capture_output=True, text=True, check=True).stdout
        if "endpoint instance " + name not in status:
            break
        time.sleep(0.5)
    assert "endpoint instance " + name not in status


def test_a_processing_job_runs_one_agent_per_node(clients):
    """Processing on two nodes: each agent fetches its processing spec by its kind, reads its
    sharded input and writes its output over the S3 API, and is told its host."""
    from test_processing import create_job, proc_lines, wait_processing
    sm, s3, logs, bucket = clients
    name = unique("slurm-proc")
    for i in range(2):
        s3.put_object(Bucket=bucket, Key="%s/data/part-%d.csv" % (name, i), Body=b"1,2\n")
    with open(os.path.join(os.path.dirname(__file__), "sdk", "processing", "prep.py"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="%s/code/prep.py" % name, Body=f.read())
    create_job(sm, s3, bucket, name, ["--mode", "none"],
               ProcessingResources={"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.c5.xlarge", "VolumeSizeInGB": 5}},
               ProcessingInputs=[
                   {"InputName": "code", "S3Input": {"S3Uri": "s3://%s/%s/code/" % (bucket, name),
                                                     "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix"}},
                   {"InputName": "data", "S3Input": {"S3Uri": "s3://%s/%s/data/" % (bucket, name),
                                                     "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
                                                     "S3DataDistributionType": "ShardedByS3Key"}}])
    d = wait_processing(sm, name, timeout=300)
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    seen = {p["resourceconfig"]["current_host"]: p for p in proc_lines(logs, name)}
    assert sorted(seen) == ["algo-1", "algo-2"]
    assert seen["algo-1"]["inputs"]["data"] == ["part-0.csv"]
    assert seen["algo-2"]["inputs"]["data"] == ["part-1.csv"]
