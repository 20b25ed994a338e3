"""The SDK v2's Debugger calls, unchanged, against Clary: fit an MXNet estimator (profiling on by
default), then while it runs update_profiler, disable_profiling and enable_default_profiling,
reading the describe after each. Prints one JSON line of findings last."""
import json
import os
import time

import sagemaker
from sagemaker.mxnet import MXNet

HERE = os.path.dirname(os.path.abspath(__file__))
session = sagemaker.Session()
estimator = MXNet(
    entry_point="train.py", source_dir=os.path.join(HERE, "profiler"), role="SageMakerRole",
    instance_count=1, instance_type="ml.c5.xlarge", framework_version="1.9.0", py_version="py38",
    sagemaker_session=session, environment={"SECONDS_TO_RUN": "20"})
estimator.fit(wait=False)
job = estimator.latest_training_job.name
sm = session.sagemaker_client


def describe():
    return sm.describe_training_job(TrainingJobName=job)


deadline = time.time() + 120
while describe()["SecondaryStatus"] != "Training" and time.time() < deadline:
    time.sleep(0.3)
found = {"job": job, "created": describe()}
estimator.update_profiler(system_monitor_interval_millis=1000)
found["updated"] = describe()
estimator.disable_profiling()
found["disabled"] = describe()
try:
    estimator.disable_profiling()
    found["disable_twice"] = "accepted"
except ValueError as e:
    found["disable_twice"] = str(e)
estimator.enable_default_profiling()
found["enabled"] = describe()
estimator.latest_training_job.wait(logs="None")
found["final"] = describe()
found["output_path"] = estimator.latest_job_profiler_artifacts_path()
print(json.dumps(found, default=str))
