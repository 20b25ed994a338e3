"""The SM_* environment and the script's arguments, compared byte for byte with what AWS's
training toolkit (sagemaker-training 5.1.4, from PyPI) produces for the same /opt/ml tree."""
import json
import os
import subprocess
import sys

import pytest

from conftest import CLARY

ORACLE = r"""
import json, sys
from sagemaker_training import environment
env = environment.Environment()
print(json.dumps({"sm_env": env.to_env_vars(), "args": env.to_cmd_args()}))
"""

HYPERPARAMETER_SETS = [
    {"epochs": "2", "lr": "0.1", "name": '"abc"'},
    # docs/contract.md §5's verified example.
    {"batch-size": "128", "lr": "0.01", "use_gpu": "true", "opt": '"sgd"', "lst": "[1, 2, 3]",
     "nested": '{"a": 1, "b": [1, 2]}', "none_val": "null", "x": "1", "_ps_port": '"8000"'},
    # Awkward: floats in exponent form, huge ints, non-JSON strings, unicode, quotes, nesting.
    {"tiny": "1e-05", "big": "1e16", "f": "1.5e-07", "whole": "100.0", "huge": "1000000000000000000000000000000",
     "bare": "sgd", "uni": '"\\u00e9t\\u00e9 \\u2603"', "quote": '"it\'s"', "both": "\"a'b\\\"c\"",
     "deep": '{"z": {"y": [1, {"x": null}]}, "a": true}', "empty": '""', "ws": ' 7 ', "nan": "NaN",
     "neg": "-0.0", "list_of_str": '["a", "b\\nc"]', "k": "false"},
    {"tab\tkey": '"v"', "UPPER": "1", "with space": '"x y"', "dash-key": "[]", "obj": "{}"},
    # SageMaker hyperparameters and framework parameters.
    {"a": "1", "sagemaker_parameter_server_enabled": "true", "sagemaker_mpi_enabled": "false",
     "_tuning_objective_metric": "loss", "sagemaker_s3_output": '"s3://b/o"'},
]


def spec_for(tmp_path, hps):
    base = tmp_path / "opt_ml"
    hyper = dict(hps)
    hyper.update({
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"job"',
        "sagemaker_region": '"us-east-1"',
    })
    channel = lambda n: {"name": n, "bucket": "bucket", "prefix": n,
                         "config": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}}
    spec = {
        "job_name": "job", "job_arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/job", "region": "us-east-1",
        "current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "instance_type": "ml.c5.xlarge", "base_dir": str(base),
        "hyperparameters": hyper, "channels": [channel("train"), channel("eval")], "training_input_mode": "File",
        "output_bucket": "bucket", "output_prefix": "out", "python": sys.executable,
        "framework_module": "sagemaker_mxnet_container.training:main", "environment": {}, "max_runtime_secs": 60,
        "stop_grace_secs": 1, "store_root": str(tmp_path / "store"), "control_url": "http://127.0.0.1:1",
        "access_key": "a", "secret_key": "b", "log_stream": "job/algo-1-0", "python_shims": str(tmp_path),
        "runtimes_dir": str(tmp_path), "runtime": "mxnet-1.9", "framework_version": "1.9.0", "device": "cpu",
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path, base


@pytest.mark.parametrize("hps", HYPERPARAMETER_SETS, ids=range(len(HYPERPARAMETER_SETS)))
def test_environment_and_arguments_match_the_toolkit(tmp_path, hps):
    spec, base = spec_for(tmp_path, hps)
    clary = json.loads(subprocess.run([CLARY, "agent", "--spec", str(spec), "--dry-run"], check=True, capture_output=True, text=True).stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": "job",
                "SAGEMAKER_TRAINING_MODULE": "sagemaker_mxnet_container.training:main"})
    out = subprocess.run([sys.executable, "-c", ORACLE], env=env, check=True, capture_output=True, text=True).stdout
    oracle = json.loads(out.strip().splitlines()[-1])
    assert clary["args"] == oracle["args"]
    assert sorted(clary["sm_env"]) == sorted(oracle["sm_env"])
    for k in oracle["sm_env"]:
        assert clary["sm_env"][k] == oracle["sm_env"][k], k
