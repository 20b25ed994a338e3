"""The AWS CLI (v1, from PyPI), unchanged, against a real Clary server: `aws s3` high-level
commands, `aws sagemaker` training job calls and `aws logs` reads."""
import filecmp
import json
import os
import subprocess
import sys

import pytest

from conftest import job_request, unique, upload_code, wait_for, wait_secondary

AWS = os.path.join(os.path.dirname(sys.executable), "aws")


@pytest.fixture(scope="module")
def aws(server):
    env = dict(os.environ, **server.env())

    def run(*args, check=True):
        proc = subprocess.run([AWS, *args], env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, "aws %s: exit %s\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc
    return run


def test_s3_mb_cp_sync_ls_rm_with_large_files(aws, tmp_path):
    bucket = unique("cli")
    assert "make_bucket: %s" % bucket in aws("s3", "mb", "s3://" + bucket).stdout
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    big = os.urandom(21 * 1024 * 1024 + 123)  # > 8 MiB: multipart, parts in parallel
    (src / "big.bin").write_bytes(big)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    (src / "sub" / "deeper" / "c.json").write_text('{"c": 1}\n')
    out = aws("s3", "sync", str(src), "s3://%s/data" % bucket).stdout
    assert out.count("upload:") == 4
    # A second sync has nothing to do: sizes and times match what was listed back.
    assert "upload:" not in aws("s3", "sync", str(src), "s3://%s/data" % bucket).stdout
    listing = aws("s3", "ls", "--recursive", "s3://%s/data/" % bucket).stdout
    assert "data/sub/deeper/c.json" in listing and str(len(big)) in listing
    top = aws("s3", "ls", "s3://%s/data/" % bucket).stdout
    assert "PRE sub/" in top and "a.txt" in top and "b.txt" not in top
    assert bucket in aws("s3", "ls").stdout
    # Download: the big file through ranged parallel GETs, and a recursive copy.
    aws("s3", "cp", "s3://%s/data/big.bin" % bucket, str(tmp_path / "big.copy"))
    assert (tmp_path / "big.copy").read_bytes() == big
    dst = tmp_path / "dst"
    aws("s3", "cp", "--recursive", "s3://%s/data" % bucket, str(dst))
    cmp = filecmp.dircmp(src, dst)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    assert filecmp.cmp(src / "sub" / "deeper" / "c.json", dst / "sub" / "deeper" / "c.json", shallow=False)
    # Deleting: one object, then everything under a prefix, then the bucket.
    aws("s3", "rm", "s3://%s/data/a.txt" % bucket)
    assert "a.txt" not in aws("s3", "ls", "s3://%s/data/" % bucket).stdout
    assert aws("s3", "rm", "--recursive", "s3://%s/data/sub" % bucket).stdout.count("delete:") == 2
    missing = aws("s3", "rb", "s3://" + bucket, check=False)
    assert missing.returncode != 0 and "BucketNotEmpty" in missing.stderr
    aws("s3", "rb", "--force", "s3://" + bucket)
    assert bucket not in aws("s3", "ls").stdout


SLEEPY = "import time\nprint('cli job started', flush=True)\nfor i in range(60):\n    print('tick', i, flush=True)\n    time.sleep(1)\n"


def test_sagemaker_training_jobs_and_logs(aws, s3, sm, bucket, tmp_path):
    job = unique("cli-job")
    source = upload_code(s3, bucket, job, {"train.py": SLEEPY})
    req = job_request(job, bucket, source, hps={"alpha": "0.5"})
    req_file = tmp_path / "request.json"
    req_file.write_text(json.dumps(req))
    arn = json.loads(aws("sagemaker", "create-training-job", "--cli-input-json", "file://%s" % req_file).stdout)["TrainingJobArn"]
    assert arn.endswith(":training-job/" + job)
    wait_secondary(sm, job, "Training")
    d = json.loads(aws("sagemaker", "describe-training-job", "--training-job-name", job).stdout)
    assert d["TrainingJobStatus"] == "InProgress" and d["HyperParameters"]["alpha"] == "0.5"
    listed = json.loads(aws("sagemaker", "list-training-jobs", "--name-contains", job, "--status-equals", "InProgress").stdout)
    assert [j["TrainingJobName"] for j in listed["TrainingJobSummaries"]] == [job]
    # The CLI pages through everything on its own with a small page size.
    all_jobs = json.loads(aws("sagemaker", "list-training-jobs", "--page-size", "1").stdout)["TrainingJobSummaries"]
    assert job in [j["TrainingJobName"] for j in all_jobs]
    aws("sagemaker", "stop-training-job", "--training-job-name", job)
    assert wait_for(sm, job, timeout=60)["TrainingJobStatus"] == "Stopped"
    aws("sagemaker", "wait", "training-job-completed-or-stopped", "--training-job-name", job)

    group = "/aws/sagemaker/TrainingJobs"
    streams = json.loads(aws("logs", "describe-log-streams", "--log-group-name", group, "--log-stream-name-prefix", job + "/").stdout)["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith(job + "/algo-1-")
    stream = streams[0]["logStreamName"]
    events = json.loads(aws("logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head").stdout)["events"]
    messages = [e["message"] for e in events]
    assert "cli job started" in messages and "tick 0" in messages
    # --limit pages: the CLI shows one page, with the token to go on.
    page = json.loads(aws("logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head", "--limit", "2").stdout)
    assert len(page["events"]) == 2 and page["nextForwardToken"]
    found = json.loads(aws("logs", "filter-log-events", "--log-group-name", group, "--log-stream-name-prefix", job + "/", "--filter-pattern", "tick").stdout)["events"]
    assert found and all("tick" in e["message"] for e in found) and found[0]["logStreamName"] == stream
    groups = json.loads(aws("logs", "describe-log-groups", "--log-group-name-prefix", "/aws/sagemaker/").stdout)["logGroups"]
    assert group in [g["logGroupName"] for g in groups]


def test_cli_errors_are_aws_shaped(aws):
    proc = aws("sagemaker", "describe-training-job", "--training-job-name", "no-such-job-here", check=False)
    assert proc.returncode != 0 and "ValidationException" in proc.stderr and "Requested resource not found" in proc.stderr
    proc = aws("s3", "cp", "s3://no-such-bucket-zz/x", "/tmp/x", check=False)
    assert proc.returncode != 0 and "404" in proc.stderr
