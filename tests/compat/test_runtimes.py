"""`clary runtimes`: the framework version table, and custom runtimes that a custom
`image_uri` selects for training and serving."""
import os
import subprocess
import sys
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import (CLARY, RUNTIMES, ROLE, deploy, job_request, log_text, unique, upload_code,
                      wait_endpoint, wait_for)


def clary(*args, check=True):
    proc = subprocess.run([CLARY, *args, "--runtimes-dir", RUNTIMES], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_runtimes_shows_the_framework_version_table():
    out = clary("runtimes").stdout
    rows = {line.split()[0].rstrip(","): line for line in out.splitlines() if line.startswith("  ") and line.split()[0][0].isdigit()}
    # Every version of the seed's table, the later ones and the minor-only form.
    for version in ("0.12.1", "1.0.0", "1.1.0", "1.2.1", "1.3.0", "1.4.1", "1.5.1", "1.6.0", "1.7.0", "1.8.0", "1.9.0"):
        assert version in out, version
    assert "1.2.1, 1.2" in out and "1.3.0, 1.3" in out
    assert "mxnet-1.3" in rows["1.3.0"] and "script mode" in rows["1.3.0"]
    assert "legacy" in rows["1.2.1"] and "mxnet-1.3" in rows["1.2.1"]
    assert "mxnet-1.9" in out and "ready" in out


def interpreter_with_mxnet(where):
    """An interpreter of its own (so the tests can tell it from the built-in runtimes) that
    sees the mxnet-1.9 runtime's packages through a .pth file."""
    runtime = os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python")
    subprocess.run([runtime, "-m", "venv", "--without-pip", str(where)], check=True)
    python = os.path.join(str(where), "bin", "python")
    site, runtime_site = (subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                                         capture_output=True, text=True).stdout.strip() for py in (python, runtime))
    with open(os.path.join(site, "runtime.pth"), "w") as f:
        f.write(runtime_site + "\n")
    return python


@pytest.fixture()
def custom_runtime(tmp_path):
    name = "custom-" + uuid.uuid4().hex[:8]
    exact = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/exact-image:v7"
    python = interpreter_with_mxnet(tmp_path / "env")
    out = clary("runtimes", "add", name, "--python", python, "--image", exact).stdout
    assert "MXNet 1.9.1" in out
    yield name, exact, python
    clary("runtimes", "remove", name)
    assert name not in clary("runtimes").stdout


def test_custom_image_trains_and_serves_on_the_registered_runtime(sm, s3, rt, logs, bucket, custom_runtime):
    name, exact, python = custom_runtime
    listing = clary("runtimes").stdout
    assert name in listing and "custom" in listing and exact in listing
    script = "import sys, os, mxnet\nprint('PYTHON', sys.executable)\nprint('MXNET', mxnet.__version__)\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('x')\n"
    jobs = {}
    for image in (name + ":latest", "registry.example.com/%s:1.0" % name, exact):
        job = unique("custom")
        req = job_request(job, bucket, upload_code(s3, bucket, job, {"train.py": script}))
        req["AlgorithmSpecification"]["TrainingImage"] = image
        sm.create_training_job(**req)
        jobs[job] = image
    for job, image in jobs.items():
        d = wait_for(sm, job, timeout=180)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        assert d["AlgorithmSpecification"]["TrainingImage"] == image  # returned as sent
        assert "PYTHON %s" % python in log_text(logs, job)
    # An endpoint whose model names the custom image runs its workers on that runtime.
    ep = unique("custom-ep")
    inference = "def model_fn(model_dir):\n    return 1\n\ndef transform_fn(model, data, content_type, accept):\n    import sys, mxnet\n    return '%s %s' % (sys.executable, mxnet.__version__), 'text/plain'\n"
    deploy(sm, s3, bucket, ep, {"code/inference.py": inference}, image=exact,
           env={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"})
    d = wait_endpoint(sm, ep)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    body = rt.invoke_endpoint(EndpointName=ep, Body=b"x", ContentType="text/plain")["Body"].read().decode()
    assert body == "%s 1.9.1" % python, body
    sm.delete_endpoint(EndpointName=ep)


def test_custom_runtime_logs_name_its_interpreter(sm, s3, logs, bucket, custom_runtime):
    name, _, python = custom_runtime
    job = unique("custom-log")
    req = job_request(job, bucket, upload_code(s3, bucket, job, {"train.py": "import sys\nprint('PYTHON', sys.executable)\n"}))
    req["AlgorithmSpecification"]["TrainingImage"] = name
    sm.create_training_job(**req)
    assert wait_for(sm, job, timeout=120)["TrainingJobStatus"] == "Completed"
    text = log_text(logs, job)
    assert "Invoking script with the following command" in text and python in text


def test_unknown_images_are_clear_errors_that_change_nothing(sm, s3, bucket):
    job = unique("unknown-image")
    req = job_request(job, bucket, upload_code(s3, bucket, job, {"train.py": "print(1)\n"}))
    req["AlgorithmSpecification"]["TrainingImage"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/not-registered:1"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    msg = e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "names no registered runtime" in msg and "clary runtimes add" in msg
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName=job)
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName=unique("m"), ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": "someone/else:2"})
    assert "clary runtimes add" in e.value.response["Error"]["Message"]


def test_runtime_from_a_requirements_file_and_bad_registrations(tmp_path):
    name = "reqs-" + uuid.uuid4().hex[:8]
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("mxnet==9.9.9\n")
    bad = clary("runtimes", "add", name, "--requirements", str(reqs), check=False)
    # pip finds no such MXNet: the add fails, and nothing is registered or left half-built.
    assert bad.returncode != 0 and "mxnet==9.9.9" in bad.stderr and name not in clary("runtimes").stdout
    assert not os.path.exists(os.path.join(RUNTIMES, name))
    # A venv that builds but has no MXNet is refused too, and its venv removed.
    reqs.write_text("tabulate==0.9.0\n")
    no_mx = clary("runtimes", "add", name, "--requirements", str(reqs), check=False)
    assert no_mx.returncode != 0 and "cannot import mxnet" in no_mx.stderr
    assert not os.path.exists(os.path.join(RUNTIMES, name))
    assert not os.path.exists(os.path.join(RUNTIMES, "custom", name + ".requirements.txt"))
    reqs.write_text("mxnet==1.9.1\nnumpy<1.24\n")
    try:
        out = clary("runtimes", "add", name, "--requirements", str(reqs)).stdout
        assert "MXNet 1.9.1" in out
        assert os.path.isfile(os.path.join(RUNTIMES, name, "bin", "python"))
    finally:
        clary("runtimes", "remove", name)
    assert not os.path.exists(os.path.join(RUNTIMES, name))
    assert "built-in" in clary("runtimes", "add", "mxnet-1.9", "--python", sys._base_executable, check=False).stderr
    no_mx = clary("runtimes", "add", "nomx-" + name, "--python", sys._base_executable, check=False)
    assert no_mx.returncode != 0 and "cannot import mxnet" in no_mx.stderr
