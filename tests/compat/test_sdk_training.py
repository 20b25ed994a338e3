"""The SageMaker Python SDK, unchanged, training against a real Clary server: v2's MXNet
estimator (fit with logs, fit without waiting, attach, failure) and v1 running the seed's
own example. The SDK's built-in waits make each fit take tens of seconds, so every scenario
starts at module setup, in parallel, and each test waits for its own."""
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from conftest import ROOT, log_text, tagged_by_host
from test_training import EXAMPLE, mnist_data  # noqa: F401 (a fixture)

HERE = os.path.join(ROOT, "tests", "compat", "sdk")
V1_PYTHON = os.environ.get("CLARY_SDK_V1_PYTHON", os.path.expanduser("~/.cache/clary-sdk1-venv/bin/python"))


class Run:
    """One SDK script in its own process, with the environment `clary env` prints."""

    def __init__(self, server, python, *args):
        self.proc = subprocess.Popen([python, *args], env=dict(os.environ, **server.env()),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.done = None

    def result(self, timeout=600):
        if self.done is None:
            stdout, stderr = self.proc.communicate(timeout=timeout)
            self.done = (self.proc.returncode, stdout, stderr)
        code, stdout, stderr = self.done
        noise = ("configprovider", "Warning", "warn(")
        err = "\n".join(l for l in stderr.splitlines() if not any(n in l for n in noise))
        assert code == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (code, stdout[-3000:], err[-6000:])
        last = stdout.strip().splitlines()[-1]
        return json.loads(last[last.index("{"):]), stdout


@pytest.fixture(scope="module")
def runs(server, mnist_data):
    started = {name: Run(server, sys.executable, os.path.join(HERE, "fit_v2.py"), name, mnist_data)
               for name in ("logs", "attach", "fail", "dist", "pipe")}
    if os.path.exists(V1_PYTHON):
        bucket = "sdk-v1-" + uuid.uuid4().hex[:10]
        started["v1"] = Run(server, V1_PYTHON, os.path.join(HERE, "fit_v1.py"), EXAMPLE,
                            os.path.join(HERE, "legacy"), mnist_data, bucket)
    yield started
    for r in started.values():
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_fit_with_logs_dependencies_requirements_and_every_hyperparameter_type(runs, sm):
    out, stdout = runs["logs"].result()
    sent = out["sent_hps"]
    # The script saw every value with its JSON type, from SM_HPS ...
    assert out["saved_hps"] == sent
    # ... and the server stored each as the JSON string the SDK sent, byte for byte.
    for k, v in sent.items():
        assert json.loads(out["stored_hps"][k]) == v
    assert out["stored_hps"]["sagemaker_program"] == '"train.py"'
    # logs=True printed the job's own lines as they came, then the SDK's summary.
    assert "hello from a dependency" in stdout  # the dependencies folder, importable
    assert "CHANNELS [\"test\", \"train\"]" in stdout
    assert "training done" in stdout
    assert "Training seconds:" in stdout
    assert stdout.index("training done") < stdout.index("Training seconds:")
    # model_data is the real artifact, and S3Downloader fetched it.
    assert out["model_data"].endswith("/sdk-out/%s/output/model.tar.gz" % out["job"])
    assert "hps.json" in out["model_files"]
    assert sm.describe_training_job(TrainingJobName=out["job"])["TrainingJobStatus"] == "Completed"


def test_fit_without_waiting_then_attach_while_running_and_when_finished(runs):
    out, stdout = runs["attach"].result()
    assert out["status_before_attach"] == "InProgress"
    # attach blocked until the job ended (the script trains for 12 s).
    assert out["status_after_attach"] == "Completed"
    assert out["attach_seconds"] > 3
    assert out["channels"] == ["training"]
    for name in ("attached", "finished"):
        e = out[name]
        assert e["entry_point"] == "train.py"
        assert e["framework_version"] == "1.9.0" and e["py_version"] == "py38"
        # hyperparameters() gives them JSON-encoded again, as the SDK would send them.
        assert e["hyperparameters"]["sleep"] == "12" and json.loads(e["hyperparameters"]["lr"]) == 0.1
        assert e["model_data"] == out["model_data"]
        assert e["role"] == "arn:aws:iam::123456789012:role/SageMakerRole"
        assert e["source_dir"].startswith("s3://") and e["source_dir"].endswith("sourcedir.tar.gz")
    # latest_training_job.wait() on the finished job printed its log.
    assert "still training, second 11" in stdout


def test_failing_script_raises_unexpected_status_with_our_failure_reason(runs):
    out, stdout = runs["fail"].result()
    assert out["raised"] == "UnexpectedStatusException"
    assert out["failure_reason"].startswith("AlgorithmError: ExecuteUserScriptError:")
    assert out["failure_reason"] in out["message"]
    assert "deliberate failure requested by the hyperparameters" in stdout  # the traceback, streamed


def test_two_instances_with_the_parameter_server_sharded_input_and_checkpoints(runs, logs):
    out, _ = runs["dist"].result()
    d = out["describe"]
    assert d["TrainingJobStatus"] == "Completed"
    assert d["ResourceConfig"]["InstanceCount"] == 2
    assert json.loads(d["HyperParameters"]["sagemaker_parameter_server_enabled"]) is True
    reports = tagged_by_host(logs, out["job"], "MODES")
    assert sorted(reports) == ["algo-1", "algo-2"]
    parts = ["part-%d.txt" % i for i in range(6)]
    a, b = reports["algo-1"]["sharded"], reports["algo-2"]["sharded"]
    assert sorted(a + b) == parts and not set(a) & set(b)
    assert reports["algo-1"]["replicated"] == parts == reports["algo-2"]["replicated"]
    assert reports["algo-1"]["config"]["sharded"]["S3DistributionType"] == "ShardedByS3Key"
    assert {r["num_workers"] for r in reports.values()} == {2}
    assert sorted(r["rank"] for r in reports.values()) == [0, 1]
    # Each host's checkpoint file reached checkpoint_s3_uri.
    assert [u.rsplit("/", 1)[1] for u in out["checkpoints"]] == ["seen-by-algo-1.json", "seen-by-algo-2.json"]
    assert d["CheckpointConfig"]["S3Uri"].startswith("s3://")


def test_pipe_input_mode_with_gzip_next_to_a_file_channel(runs, logs):
    out, _ = runs["pipe"].result()
    d = out["describe"]
    assert d["TrainingJobStatus"] == "Completed"
    assert d["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    report = tagged_by_host(logs, out["job"], "MODES")["algo-1"]
    assert report["config"]["stream"]["TrainingInputMode"] == "Pipe"
    assert report["config"]["files"]["TrainingInputMode"] == "File"
    assert [p["sha256"] for p in report["stream"]] == [out["expected"]] * 2
    assert report["files"] == ["images.npy", "labels.npy"]


@pytest.mark.skipif(not os.path.exists(V1_PYTHON), reason="the SDK v1 venv (scripts/test.sh builds it) is missing")
def test_sdk_v1_legacy_1_2_1_and_script_mode_on_real_mxnet_1_3(runs, logs, mnist_data):
    out, stdout = runs["v1"].result()
    legacy = out["legacy"]
    assert legacy["status"] == "Completed", legacy
    assert legacy["image"].endswith("/sagemaker-mxnet:1.2.1-gpu-py2"), legacy
    legacy_log = log_text(logs, legacy["job"])
    # No GPU here: it says so and trains on CPU, on the real MXNet of the 1.3 runtime.
    assert "has no GPU" in legacy_log and "/mxnet-1.3/bin/python -m clary_training.legacy" in legacy_log
    accuracy = float(legacy_log.split("legacy test accuracy: ")[1].split()[0])
    assert accuracy > 0.5, legacy_log[-2000:]
    assert legacy["model_files"] == ["model-0000.params", "model-shapes.json", "model-symbol.json"]
    legacy_probs = np.array(legacy["prediction"])
    assert legacy_probs.shape == (2, 10) and np.allclose(legacy_probs.sum(axis=1), 1, atol=1e-3)
    assert out["status"] == "Completed"
    assert out["image"].endswith("/sagemaker-mxnet:1.3.0-cpu-py3")
    # It really ran on MXNet 1.3.0, and the v1 log loop printed the job's lines.
    assert "/mxnet-1.3/bin/python" in log_text(logs, out["job"])
    assert "final test accuracy" in stdout
    assert out["attached"]["framework_version"] == "1.3.0" and out["attached"]["entry_point"] == "train.py"
    assert json.loads(out["attached"]["hyperparameters"]["epochs"]) == 1
    probs = np.array(out["prediction"])
    assert probs.shape == (2, 10)
    assert np.isfinite(probs).all() and not np.allclose(probs[0], probs[1])
