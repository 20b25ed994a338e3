"""Multi-host training jobs on one machine: hosts with their own loopback addresses that
resolve by name, one log stream per host, the MXNet parameter server, and a failing host
ending the job."""
import os
import time

from conftest import job_request, tagged, stream_texts, unique, upload_code, wait_for
from test_training import EXAMPLE, mnist_data, upload_dir  # noqa: F401 (fixture)

def test_two_hosts_train_the_example_with_dist_sync(sm, s3, logs, bucket, mnist_data):
    job = unique("dist")
    source = upload_code(s3, bucket, job, {"train.py": open(os.path.join(EXAMPLE, "train.py")).read()})
    channels = {c: upload_dir(s3, bucket, os.path.join(mnist_data, c), "data/%s/%s" % (job, c)) for c in ("train", "test")}
    req = job_request(job, bucket, source, channels=channels, hps={
        "epochs": "2", "kvstore": '"dist_sync"', "sagemaker_parameter_server_enabled": "true"})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=400)
    texts = stream_texts(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), {h: t[-3000:] for h, t in texts.items()})
    assert sorted(texts) == ["algo-1", "algo-2"], sorted(texts)
    ranks = set()
    for host, text in texts.items():
        line = next(l for l in text.splitlines() if l.startswith("kvstore dist_sync"))
        assert "num_workers 2" in line and host in line, line
        ranks.add(line.split("rank ")[1].split(",")[0])
        assert "final test accuracy" in text, text[-2000:]
    assert ranks == {"0", "1"}, ranks
    # The scheduler runs on hosts[0] only; each host runs one server.
    assert "parameter server scheduler on algo-1" in texts["algo-1"]
    assert "parameter server scheduler" not in texts["algo-2"]
    assert all("parameter server server on " + h in texts[h] for h in texts)
    # One model, from algo-1.
    assert d["ModelArtifacts"]["S3ModelArtifacts"].endswith("/%s/output/model.tar.gz" % job)


PROBE = r'''
import json, os, socket, sys
hosts = json.loads(os.environ["SM_HOSTS"])
me = os.environ["SM_CURRENT_HOST"]
addresses = {h: socket.gethostbyname(h) for h in hosts}
rc = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "resourceconfig.json")))
dmlc = {k: v for k, v in os.environ.items() if k.startswith("DMLC_") or k == "PS_VERBOSE"}
print("PROBE " + json.dumps({"me": me, "hosts": hosts, "addresses": addresses, "rc": rc, "dmlc": dmlc,
                             "hostname": socket.gethostname()}))
if me == "algo-2" and os.environ.get("FAIL_ON_ALGO_2"):
    sys.exit(5)
if os.environ.get("FAIL_ON_ALGO_2"):
    import time
    time.sleep(300)
'''


def test_three_hosts_resolve_each_other_on_their_own_loopback_addresses(sm, s3, logs, bucket):
    job = unique("hosts")
    source = upload_code(s3, bucket, job, {"probe.py": PROBE})
    req = job_request(job, bucket, source, program="probe.py", hps={
        "sagemaker_parameter_server_enabled": "true", "_ps_port": "9123"})
    req["ResourceConfig"]["InstanceCount"] = 3
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=200)
    texts = stream_texts(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), texts)
    probes = {h: tagged(t, "PROBE") for h, t in texts.items()}
    assert sorted(probes) == ["algo-1", "algo-2", "algo-3"]
    addresses = probes["algo-1"]["addresses"]
    assert len(set(addresses.values())) == 3, addresses
    for host, p in probes.items():
        assert p["me"] == host and p["hosts"] == ["algo-1", "algo-2", "algo-3"]
        assert p["addresses"] == addresses, "every host sees the same names"
        assert addresses[host].startswith("127.") and addresses[host] != "127.0.0.1"
        assert p["rc"]["current_host"] == host and p["rc"]["hosts"] == p["hosts"]
        assert p["rc"]["instance_groups"][0]["hosts"] == p["hosts"]
        assert p["rc"]["network_interface_name"] == "eth0"
        assert p["dmlc"] == {
            "DMLC_NUM_WORKER": "3", "DMLC_NUM_SERVER": "3", "DMLC_ROLE": "worker",
            "DMLC_PS_ROOT_URI": addresses["algo-1"], "DMLC_PS_ROOT_PORT": "9123", "PS_VERBOSE": "0",
            "DMLC_NODE_HOST": addresses[host],
        }
    # Where the agent may make namespaces (root), the host's name is its hostname too.
    if os.geteuid() == 0:
        assert {p["hostname"] for p in probes.values()} == {"algo-1", "algo-2", "algo-3"}


def test_one_failing_host_fails_the_job_names_the_host_and_stops_the_others(sm, s3, logs, bucket):
    job = unique("hostfail")
    source = upload_code(s3, bucket, job, {"probe.py": PROBE})
    req = job_request(job, bucket, source, program="probe.py")
    req["ResourceConfig"]["InstanceCount"] = 2
    req["Environment"] = {"FAIL_ON_ALGO_2": "1"}
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    assert "(host algo-2)" in d["FailureReason"] and "ExitCode 5" in d["FailureReason"], d["FailureReason"]
    # algo-1 would sleep for 300 s: the agent was told to stop it, and its log says so.
    deadline = time.time() + 30
    while "Stop requested" not in stream_texts(logs, job)["algo-1"] and time.time() < deadline:
        time.sleep(0.2)
    assert "Stop requested" in stream_texts(logs, job)["algo-1"]


def test_without_namespaces_python_still_resolves_the_job_hosts(tmp_path):
    """Where the agent may not make a mount namespace (not root), the `sitecustomize` shim on
    the job's PYTHONPATH teaches Python the job's hosts file; other names resolve as before."""
    import subprocess
    from conftest import RUNTIMES, ROOT
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n# Hosts of training job j\n127.9.8.1\talgo-1\n127.9.8.2\talgo-2 # two\n")
    code = ("import socket; print(socket.gethostbyname('algo-2'), socket.getaddrinfo('algo-1', 80)[0][4][0], "
            "socket.gethostbyname_ex('algo-1')[2][0], socket.gethostbyname('localhost'))")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), CLARY_HOSTS_FILE=str(hosts))
    out = subprocess.run([os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python"), "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["127.9.8.2", "127.9.8.1", "127.9.8.1", "127.0.0.1"]
    env.pop("CLARY_HOSTS_FILE")
    r = subprocess.run([os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python"), "-c", "import socket; socket.gethostbyname('algo-2')"],
                       env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "gaierror" in r.stderr
