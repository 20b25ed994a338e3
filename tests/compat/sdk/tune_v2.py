"""The SDK v2's HyperparameterTuner, unchanged, against Clary: tune an MXNet estimator, wait,
read the best training job and the analytics dataframe, attach. argv[1] is the strategy.
Prints one JSON line of findings last."""
import json
import os
import sys
import uuid

import sagemaker
from sagemaker.mxnet import MXNet
from sagemaker.tuner import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

HERE = os.path.dirname(os.path.abspath(__file__))
strategy = sys.argv[1]
session = sagemaker.Session()
def estimator(**hps):
    return MXNet(
        entry_point="tune.py", source_dir=os.path.join(HERE, "tuning"), role="SageMakerRole",
        instance_count=1, instance_type="ml.c5.xlarge", framework_version="1.9.0", py_version="py38",
        sagemaker_session=session, hyperparameters=dict({"epochs": 3, "epoch-seconds": 0.2}, **hps))


metric = [{"Name": "validation:accuracy", "Regex": r"Validation-accuracy=([0-9\.\-]+)"}]
if strategy == "multi":
    # HyperparameterTuner.create: two estimators, each with its own ranges.
    tuner = HyperparameterTuner.create(
        estimator_dict={"relu": estimator(act="relu"), "tanh": estimator(act="tanh")},
        objective_metric_name_dict={"relu": "validation:accuracy", "tanh": "validation:accuracy"},
        hyperparameter_ranges_dict={
            "relu": {"lr": ContinuousParameter(0.0001, 1.0, scaling_type="Logarithmic")},
            "tanh": {"layers": IntegerParameter(1, 4)}},
        metric_definitions_dict={"relu": metric, "tanh": metric},
        strategy="Random", max_jobs=4, max_parallel_jobs=2)
else:
    ranges = {"act": CategoricalParameter(["relu", "tanh"]), "layers": IntegerParameter(1, 4)}
    if strategy != "Grid":
        ranges["lr"] = ContinuousParameter(0.0001, 1.0, scaling_type="Logarithmic")
    tuner = HyperparameterTuner(
        estimator(), objective_metric_name="validation:accuracy", hyperparameter_ranges=ranges,
        metric_definitions=metric, max_jobs=6 if strategy != "Grid" else 8, max_parallel_jobs=2,
        strategy=strategy, objective_type="Maximize")
# The SDK names tuning jobs by the minute; two in one minute would collide (on AWS as well).
job_name = "%s-%s" % (strategy.lower()[:5], uuid.uuid4().hex[:12])
if strategy == "multi":
    tuner.fit(job_name=job_name, include_cls_metadata={"relu": True, "tanh": True}, wait=False)
else:
    tuner.fit(job_name=job_name, wait=False)
tuner.wait()
name = tuner.latest_tuning_job.name
best = tuner.best_training_job()
frame = tuner.analytics().dataframe()
attached = HyperparameterTuner.attach(name, sagemaker_session=session)
describe = session.sagemaker_client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
deployed = None
if strategy == "Bayesian":
    # The best trial's model, deployed and asked.
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer
    predictor = tuner.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                             serializer=JSONSerializer(), deserializer=JSONDeserializer())
    try:
        deployed = predictor.predict([1, 2])
    finally:
        predictor.delete_endpoint()
best_hps = session.sagemaker_client.describe_training_job(TrainingJobName=best)["HyperParameters"]
print(json.dumps({
    "deployed": deployed,
    "best_hps": best_hps,
    "name": name,
    "best": best,
    "status": describe["HyperParameterTuningJobStatus"],
    "counters": describe["TrainingJobStatusCounters"],
    "best_value": describe["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
    "rows": frame.to_dict(orient="records"),
    "attached_objective": attached.objective_metric_name or attached.objective_metric_name_dict,
    "attached_ranges": sorted(r["Name"] for rs in (attached.hyperparameter_ranges() or {}).values() for r in rs)
    if strategy != "multi" else sorted(attached.estimator_dict),
    "definitions": sorted({t.get("TrainingJobDefinitionName", "") for t in session.sagemaker_client.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobSummaries"]}),
}, default=str))
