"""CheckpointConfig and RetryStrategy through boto3 against a real `clary server`: checkpoints
sync to S3 while the script runs, a new job with the same URI resumes from them, and a host
that dies by a signal restarts the job from its checkpoints."""
import time

from conftest import tagged, job_request, log_text, unique, upload_code, wait_for

# The script finds the checkpoint directory where the job's /opt/ml stand-in is.
CHECKPOINTER = r'''
import json, os, sys, time
ckpt = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints")
found = sorted(os.listdir(ckpt))
print("FOUND " + json.dumps({f: open(os.path.join(ckpt, f)).read() for f in found}))
if not found:
    with open(os.path.join(ckpt, "step-1.txt"), "w") as f:
        f.write("weights after step 1")
    time.sleep(300)
'''


def checkpoint_config(bucket, prefix):
    return {"S3Uri": "s3://%s/%s" % (bucket, prefix), "LocalPath": "/opt/ml/checkpoints"}


def found(text):
    return tagged(text, "FOUND")


def test_checkpoints_sync_while_running_and_a_new_job_resumes_from_them(sm, s3, logs, bucket):
    prefix = "checkpoints/" + unique("run")
    first = unique("ckpt-a")
    source = upload_code(s3, bucket, first, {"train.py": CHECKPOINTER})
    req = job_request(first, bucket, source)
    req["CheckpointConfig"] = checkpoint_config(bucket, prefix)
    sm.create_training_job(**req)
    # The file reaches S3 while the script is still running (it sleeps for 300 s).
    deadline = time.time() + 60
    while time.time() < deadline:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        if listed:
            break
        time.sleep(0.2)
    assert [o["Key"] for o in listed] == [prefix + "/step-1.txt"], listed
    assert sm.describe_training_job(TrainingJobName=first)["TrainingJobStatus"] == "InProgress"
    sm.stop_training_job(TrainingJobName=first)
    d = wait_for(sm, first, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped"
    assert d["CheckpointConfig"] == checkpoint_config(bucket, prefix)
    assert found(log_text(logs, first)) == {}

    second = unique("ckpt-b")
    source = upload_code(s3, bucket, second, {"train.py": CHECKPOINTER})
    req = job_request(second, bucket, source)
    req["CheckpointConfig"] = checkpoint_config(bucket, prefix)
    sm.create_training_job(**req)
    d = wait_for(sm, second, timeout=60)
    text = log_text(logs, second)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-2000:])
    assert found(text) == {"step-1.txt": "weights after step 1"}


DIES_ONCE = r'''
import os, signal, sys
ckpt = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints")
marker = os.path.join(ckpt, "attempt-marker")
if os.environ.get("EXIT_CODE"):
    sys.exit(int(os.environ["EXIT_CODE"]))
if os.path.exists(marker):
    print("resumed after a restart: " + open(marker).read())
    sys.exit(0)
with open(marker, "w") as f:
    f.write("first attempt got this far")
sys.stdout.flush()
# A host dying under the script (a spot reclaim, the OOM killer): transient.
os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_host_killed_by_a_signal_restarts_the_job_which_resumes_from_its_checkpoint(sm, s3, logs, bucket):
    job = unique("retry")
    source = upload_code(s3, bucket, job, {"train.py": DIES_ONCE})
    req = job_request(job, bucket, source)
    req["CheckpointConfig"] = checkpoint_config(bucket, "checkpoints/" + job)
    req["RetryStrategy"] = {"MaximumRetryAttempts": 2}
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=120)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert d["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    restarts = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Restarting"]
    assert len(restarts) == 1, d["SecondaryStatusTransitions"]
    assert "attempt 2 of 3" in restarts[0]["StatusMessage"] and "algo-1" in restarts[0]["StatusMessage"]
    assert "signal 9" in restarts[0]["StatusMessage"] or "ExitCode 137" in restarts[0]["StatusMessage"], restarts
    assert "resumed after a restart: first attempt got this far" in text
    # Each attempt logs to a stream of its own host.
    assert d["SecondaryStatusTransitions"][-1]["Status"] == "Completed"


def test_a_script_error_is_not_retried(sm, s3, bucket):
    job = unique("noretry")
    source = upload_code(s3, bucket, job, {"train.py": DIES_ONCE})
    req = job_request(job, bucket, source)
    req["RetryStrategy"] = {"MaximumRetryAttempts": 3}
    req["Environment"] = {"EXIT_CODE": "3"}
    sm.create_training_job(**req)
    d = wait_for(sm, job, timeout=60)
    assert d["TrainingJobStatus"] == "Failed" and "ExitCode 3" in d["FailureReason"], d.get("FailureReason")
    assert not [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Restarting"]
