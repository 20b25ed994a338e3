"""A bounded fault drill: `kill -9` of the server at random moments around job and endpoint
launches, then a restart on the same data directory. Nothing may run twice, nothing may be left
running untracked, and nothing stored may be lost."""
import os
import random
import signal
import time

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

from conftest import Server, deploy, pids_of, job_request, log_text, unique, upload_code, wait_endpoint, wait_for
from test_hardening_hosting import model_server_pids

# Fixed, so a failure can be replayed; the window is a few milliseconds wide, so the delays
# cluster around the launch.
RNG = random.Random(20261128)
ROUNDS = 5

TRANSFORM = '''
def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    return b"ok", "text/plain"
'''

TRAIN = '''
import os, time
print("DRILL-RUN", os.getpid(), flush=True)
time.sleep(1)
'''


def agent_pids(data_dir, job):
    """PIDs of the host agents of `job` (children of the servers this test started)."""
    return pids_of(b"agent", os.path.join(data_dir, "jobs", job))


def crash_and_restart(server):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    return Server(server.data_dir, listen=server.listen).start()


def cut_short_by_the_crash(call):
    """Runs a call whose answer the server's abort may cut off: the failpoint fires as soon as
    the request's effect is stored and the launch begins, which can be before the response is
    written."""
    try:
        call()
    except (EndpointConnectionError, ConnectionClosedError):
        pass


def wait_exit(server, timeout=60):
    """The server's own abort at a failpoint."""
    server.proc.wait(timeout=timeout)
    assert server.proc.returncode == -signal.SIGABRT, server.proc.returncode


def test_a_server_killed_between_starting_and_recording_a_unit_adopts_it(tmp_path):
    data = tmp_path / "data"
    endpoint = unique("drill-ep")
    try:
        adopted_across_failpoints(data, endpoint)
    finally:
        # On failure the servers may be gone with a model server of theirs still running.
        for pid in model_server_pids(str(data), endpoint):
            os.kill(pid, signal.SIGKILL)


def adopted_across_failpoints(data, endpoint):
    armed = Server(data, env={"CLARY_FAILPOINT": "after-instance-launch"}).start()
    sm, s3 = armed.client("sagemaker"), armed.client("s3")
    s3.create_bucket(Bucket="drill")
    source = upload_code(s3, "drill", "drill-code", {"train.py": TRAIN})
    cut_short_by_the_crash(lambda: deploy(sm, s3, "drill", endpoint, {"code/inference.py": TRANSFORM}))
    wait_exit(armed)
    assert len(model_server_pids(str(data), endpoint)) == 1, "the launch before the crash started it"

    armed = Server(data, listen=armed.listen, env={"CLARY_FAILPOINT": "after-job-launch"}).start()
    job = unique("drill-job")
    cut_short_by_the_crash(
        lambda: armed.client("sagemaker").create_training_job(**job_request(job, "drill", source, max_run=120)))
    wait_exit(armed)

    server = Server(data, listen=armed.listen).start()
    try:
        sm = server.client("sagemaker")
        assert wait_endpoint(sm, endpoint, until=("InService",))["EndpointStatus"] == "InService"
        assert len(model_server_pids(server.data_dir, endpoint)) == 1, "relaunched beside the orphan"
        d = wait_for(sm, job, timeout=180)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        runs = log_text(server.client("logs"), job).count("DRILL-RUN")
        assert runs == 1, "the script ran %d times" % runs
        sm.delete_endpoint(EndpointName=endpoint)
        deadline = time.time() + 60
        while model_server_pids(server.data_dir, endpoint) and time.time() < deadline:
            time.sleep(0.2)
        assert model_server_pids(server.data_dir, endpoint) == [], "an orphan model server outlived DeleteEndpoint"
    finally:
        server.stop()


def test_kill_9_around_launches_runs_nothing_twice_and_leaves_nothing_untracked(tmp_path):
    server = Server(tmp_path / "data").start()
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="drill")
        source = upload_code(s3, "drill", "drill-code", {"train.py": TRAIN})
        kept = {}
        for round_ in range(ROUNDS):
            sm = server.client("sagemaker")
            endpoint, job = unique("drill-ep"), unique("drill-job")
            deploy(sm, s3, "drill", endpoint, {"code/inference.py": TRANSFORM})
            time.sleep(RNG.uniform(0, 0.05))
            server = crash_and_restart(server)
            sm = server.client("sagemaker")
            sm.create_training_job(**job_request(job, "drill", source, max_run=120))
            time.sleep(RNG.uniform(0, 0.05))
            server = crash_and_restart(server)
            sm, s3 = server.client("sagemaker"), server.client("s3")

            assert wait_endpoint(sm, endpoint, until=("InService",))["EndpointStatus"] == "InService"
            assert len(model_server_pids(server.data_dir, endpoint)) == 1, "round %d" % round_
            d = wait_for(sm, job, timeout=180)
            assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
            runs = log_text(server.client("logs"), job).count("DRILL-RUN")
            assert runs == 1, "round %d: the script ran %d times" % (round_, runs)
            assert agent_pids(server.data_dir, job) == []

            key = "kept/%d" % round_
            s3.put_object(Bucket="drill", Key=key, Body=key.encode())
            kept[key] = key.encode()

            sm.delete_endpoint(EndpointName=endpoint)
            deadline = time.time() + 60
            while model_server_pids(server.data_dir, endpoint) and time.time() < deadline:
                time.sleep(0.2)
            assert model_server_pids(server.data_dir, endpoint) == [], "an orphan model server outlived DeleteEndpoint"
        for key, body in kept.items():
            assert s3.get_object(Bucket="drill", Key=key)["Body"].read() == body
    finally:
        server.stop()
