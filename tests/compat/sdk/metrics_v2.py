"""The SDK v2's metric_definitions and TrainingJobAnalytics, unchanged, against Clary: fit an
MXNet estimator whose script logs metrics, then read them back as the SDK's dataframes. Prints
one JSON line of findings last."""
import json
import os
import sys

import sagemaker
from sagemaker.analytics import TrainingJobAnalytics
from sagemaker.mxnet import MXNet

HERE = os.path.dirname(os.path.abspath(__file__))
session = sagemaker.Session()
estimator = MXNet(
    entry_point="train.py", source_dir=os.path.join(HERE, "metrics"), role="SageMakerRole",
    instance_count=1, instance_type="ml.c5.xlarge", framework_version="1.9.0", py_version="py38",
    sagemaker_session=session,
    metric_definitions=[
        {"Name": "validation:accuracy", "Regex": r"Validation-accuracy=([0-9\.]+)"},
        {"Name": "train:loss", "Regex": r"Train-loss=([0-9\.]+)"},
    ])
estimator.fit(wait=True, logs=False)
job = estimator.latest_training_job.name
frame = estimator.training_job_analytics.dataframe()
direct = TrainingJobAnalytics(job, metric_names=["validation:accuracy"], sagemaker_session=session).dataframe()
print(json.dumps({
    "job": job,
    "rows": frame.to_dict(orient="records"),
    "direct": direct.to_dict(orient="records"),
}, default=str))
