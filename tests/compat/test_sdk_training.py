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

from conftest import ROOT, log_text
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
               for name in ("logs", "attach", "fail")}
    if os.path.exists(V1_PYTHON):
        bucket = "sdk-v1-" + uuid.uuid4().hex[:10]
        started["v1"] = Run(server, V1_PYTHON, os.path.join(HERE, "fit_v1.py"), EXAMPLE, mnist_data, bucket)
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


@pytest.mark.skipif(not os.path.exists(V1_PYTHON), reason="the SDK v1 venv (scripts/test.sh builds it) is missing")
def test_sdk_v1_seed_example_and_script_mode_on_real_mxnet_1_3(runs, logs, mnist_data):
    out, stdout = runs["v1"].result()
    legacy = out["legacy"]
    assert legacy["raised"] == "ClientError" and legacy["seconds"] < 30, legacy
    assert "ValidationException" in legacy["message"] and "legacy train() mode" in legacy["message"]
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
