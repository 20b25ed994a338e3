"""The SageMaker Python SDK v3 (`sagemaker>=3`: ModelTrainer, ModelBuilder, the sagemaker.core
resource classes), unchanged, against Clary: in a venv of its own (tests/requirements-sdk-v3.txt,
made by scripts/test.sh), driven by sdk/fit_v3.py with the environment `clary env` prints and
no role anywhere (the config names the default)."""
import glob
import json
import os
import subprocess

import pytest

from conftest import ROOT
from test_training import mnist_data  # noqa: F401 (a fixture)

HERE = os.path.join(ROOT, "tests", "compat", "sdk")
V3_PYTHON = os.environ.get("CLARY_SDK_V3_PYTHON", os.path.expanduser("~/.cache/clary-sdk3-venv/bin/python"))


class Run:
    """One scenario of sdk/fit_v3.py in its own process."""

    def __init__(self, server, *args):
        self.proc = subprocess.Popen([V3_PYTHON, os.path.join(HERE, "fit_v3.py"), *args],
                                     env=dict(os.environ, **server.env()),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.done = None

    def result(self, timeout=600):
        if self.done is None:
            stdout, stderr = self.proc.communicate(timeout=timeout)
            self.done = (self.proc.returncode, stdout, stderr)
        code, stdout, stderr = self.done
        assert code == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (code, stdout[-3000:], stderr[-8000:])
        # rich's progress panel shares stdout (and leaves its control codes on the line): the
        # findings follow the last RESULT mark.
        line = next(l for l in reversed(stdout.splitlines()) if "RESULT " in l)
        return json.loads(line[line.index("RESULT ") + len("RESULT "):]), stderr


@pytest.fixture(scope="module")
def runs(server, mnist_data):
    if not os.path.exists(V3_PYTHON):
        pytest.skip("no SDK v3 venv at %s: scripts/test.sh makes it (tests/requirements-sdk-v3.txt)" % V3_PYTHON)
    started = {name: Run(server, name, mnist_data) for name in ("train", "fail")}
    yield started
    for r in started.values():
        if r.proc.poll() is None:
            r.proc.kill()


def test_model_trainer_with_source_code_trains_with_role_none(runs, server):
    out, stderr = runs["train"].result()
    job, facts = out["job"], out["facts"]
    assert job["status"] == "Completed"
    # role=None: the default of the config `clary env` wrote, in the server's account.
    account = server.client("sts").get_caller_identity()["Account"]
    assert job["role"] == "arn:aws:iam::%s:role/SageMakerRole" % account
    # What v3 sends for SourceCode, honoured: its drivers ran through the entrypoint.
    assert job["entrypoint"] == ["/bin/bash"]
    assert "sm_train.sh" in job["arguments"][-1]
    assert job["channels"] == ["code", "sm_drivers", "test", "train"]
    assert job["hyperparameters"] == {"epochs": "3", "learning-rate": "0.1"}
    # The container's view: /opt/ml at its real path, the runtime's python3 and pip first on
    # PATH, requirements.txt installed into the job's own environment (not the runtime).
    assert facts["argv"] == ["--epochs", "3", "--learning-rate", "0.1"]
    assert facts["hyperparameters_json"] == {"epochs": "3", "learning-rate": "0.1"}
    assert facts["resource_config"]["hosts"] == ["algo-1"]
    assert facts["channels"]["train"] == facts["channels"]["test"] == ["images.npy", "labels.npy"]
    assert "train.py" in facts["channels"]["code"] and "requirements.txt" in facts["channels"]["code"]
    assert facts["cwd"] == "/opt/ml/input/data/code"
    assert facts["sm_model_dir"] == "/opt/ml/model"
    assert facts["job_name"] == job["name"]
    venv_bin = os.path.dirname(facts["python3_on_path"])
    assert facts["pip_on_path"] == os.path.join(venv_bin, "pip")
    assert facts["tabulate_from"].startswith(os.path.dirname(venv_bin))
    runtimes = os.environ.get("CLARY_RUNTIMES_DIR", os.path.expanduser("~/.cache/clary/runtimes"))
    assert not glob.glob(os.path.join(runtimes, "mxnet-1.9", "**", "tabulate", "__init__.py"), recursive=True)
    assert int(facts["driver_mode"], 8) & 0o100, facts["driver_mode"]  # chmod +x took effect
    # logs=True: the job's log came through the SDK's logging, the training's lines among it.
    assert "Running Basic Script driver" in stderr
    assert 0.5 < out["accuracy_logged"] <= 1.0
    # What the script wrote by its hard-coded /opt/ml path is in model.tar.gz.
    assert "model-symbol.json" in out["model_files"] and "model-0000.params" in out["model_files"]
    assert out["written_at_opt_ml"] == "hard-coded /opt/ml path"


def test_the_jobs_chmod_never_reaches_the_stored_driver(runs, server):
    out, _ = runs["train"].result()
    d = out["stored_driver"]
    stored = glob.glob(os.path.join(server.data_dir, "objects", "buckets", d["bucket"], glob.escape(d["key"]) + "~*"))
    stored = [p for p in stored if os.path.isfile(p)]
    assert stored, "no stored file for s3://%s/%s" % (d["bucket"], d["key"])
    for path in stored:
        if open(path, "rb").read() == d["text"].encode():
            assert os.stat(path).st_mode & 0o111 == 0, oct(os.stat(path).st_mode)


def test_model_builder_deploys_and_serves_what_was_trained(runs):
    out, _ = runs["train"].result()
    assert out["endpoint_status"] == "InService"
    assert out["served_rows"] == 300
    # The endpoint runs the trained model: the same accuracy on the same test set.
    assert abs(out["served_accuracy"] - out["accuracy_logged"]) < 0.01, out
    assert out["endpoint_deleted"]


def test_a_failed_job_raises_failed_status_error_with_its_reason(runs):
    out, _ = runs["fail"].result()
    assert out["job"]["status"] == "Failed"
    assert out["job"]["failure_reason"] == "AlgorithmError: deliberate failure requested by the hyperparameters"
    assert out["raised"]["type"] == "FailedStatusError"
    assert out["job"]["failure_reason"] in out["raised"]["text"]
