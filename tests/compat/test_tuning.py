"""Hyperparameter tuning jobs end to end: real trials (training jobs) on the training
lifecycle, objective metrics read from their logs, each strategy, early stopping, stop, the
SDK's HyperparameterTuner unchanged, and AWS-shaped refusals."""
import json
import os
import sys
import time

import pytest
from botocore.exceptions import ClientError

from conftest import IMAGE, ROLE, unique, upload_code
from test_sdk_training import HERE, Run

SCRIPT = open(os.path.join(HERE, "tuning", "tune.py")).read()
METRIC = {"Name": "validation:accuracy", "Regex": r"Validation-accuracy=([0-9\.\-]+)"}


@pytest.fixture(scope="module")
def source(s3, bucket):
    return upload_code(s3, bucket, unique("tune-code"), {"tune.py": SCRIPT})


def tuning_request(name, bucket, source, strategy="Random", max_jobs=4, parallel=2, ranges=None,
                   early="Off", seed=None, statics=None, metric="validation:accuracy"):
    static = {"sagemaker_program": '"tune.py"', "sagemaker_submit_directory": '"%s"' % source,
              "sagemaker_region": '"us-east-1"', "epochs": "3", "epoch-seconds": "0.2"}
    static.update(statics or {})
    config = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": metric},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": parallel},
        "ParameterRanges": ranges or {
            "ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"}],
            "IntegerParameterRanges": [{"Name": "layers", "MinValue": "1", "MaxValue": "4"}],
            "CategoricalParameterRanges": [{"Name": "act", "Values": ["relu", "tanh"]}],
        },
        "TrainingJobEarlyStoppingType": early,
    }
    if seed is not None:
        config["RandomSeed"] = seed
    return dict(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition={
            "StaticHyperParameters": static,
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": [METRIC]},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://%s/tuning" % bucket},
            "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        })


def wait_tuning(sm, name, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if d["HyperParameterTuningJobStatus"] in ("Completed", "Failed", "Stopped"):
            return d
        time.sleep(0.5)
    raise AssertionError("tuning job %s did not end: %s" % (name, d))


def trials(sm, name):
    return sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, MaxResults=100)["TrainingJobSummaries"]


def test_random_search_runs_real_trials_and_finds_the_best(sm, bucket, source):
    name = unique("tune")[:32]
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, max_jobs=5, seed=7))
    d = wait_tuning(sm, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 5
    assert d["ObjectiveStatusCounters"]["Succeeded"] == 5
    ts = trials(sm, name)
    assert len(ts) == 5
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in ts]
    best = d["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(values)
    for t in ts:
        assert t["TrainingJobName"].startswith(name + "-")
        hp = t["TunedHyperParameters"]
        assert 0.0001 <= float(hp["lr"]) <= 1 and hp["layers"] in {"1", "2", "3", "4"} and hp["act"] in {"relu", "tanh"}
        job = sm.describe_training_job(TrainingJobName=t["TrainingJobName"])
        assert job["HyperParameters"]["_tuning_objective_metric"] == "validation:accuracy"
        assert job["HyperParameters"]["lr"] == hp["lr"] and job["HyperParameters"]["epochs"] == "3"
        assert job["TuningJobArn"] == d["HyperParameterTuningJobArn"]
    # Sorted by objective, best first.
    by_objective = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue", SortOrder="Descending")["TrainingJobSummaries"]
    assert by_objective[0]["TrainingJobName"] == best["TrainingJobName"]
    # The static hyperparameters come back exactly as sent.
    statics = d["TrainingJobDefinition"]["StaticHyperParameters"]
    assert statics["sagemaker_program"] == '"tune.py"' and statics["_tuning_objective_metric"] == "validation:accuracy"
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains=name)["HyperParameterTuningJobSummaries"]
    assert [j["HyperParameterTuningJobName"] for j in listed] == [name]


def test_the_same_seed_gives_the_same_trials(sm, bucket, source):
    picked = []
    for _ in range(2):
        name = unique("seed")[:32]
        sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, max_jobs=3, parallel=3, seed=42,
                                                              statics={"epoch-seconds": "0.01", "epochs": "1"}))
        wait_tuning(sm, name)
        picked.append(sorted(tuple(sorted(t["TunedHyperParameters"].items())) for t in trials(sm, name)))
    assert picked[0] == picked[1]


def test_grid_search_tries_every_combination_once(sm, bucket, source):
    name = unique("grid")[:32]
    ranges = {"IntegerParameterRanges": [{"Name": "layers", "MinValue": "2", "MaxValue": "4"}],
              "CategoricalParameterRanges": [{"Name": "act", "Values": ["relu", "tanh"]}]}
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, strategy="Grid", max_jobs=20, parallel=3,
                                                          ranges=ranges, statics={"epoch-seconds": "0.01", "epochs": "1"}))
    d = wait_tuning(sm, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    combos = sorted((t["TunedHyperParameters"]["layers"], t["TunedHyperParameters"]["act"]) for t in trials(sm, name))
    assert combos == sorted((str(l), a) for l in (2, 3, 4) for a in ("relu", "tanh"))


def test_early_stopping_stops_weak_trials(sm, bucket, source):
    """Auto early stopping: once a few trials have reported, a trial whose accuracy at an epoch
    is below the median of the earlier ones at that epoch is stopped."""
    name = unique("early")[:32]
    sm.create_hyper_parameter_tuning_job(**tuning_request(
        name, bucket, source, max_jobs=10, parallel=2, early="Auto", seed=3,
        statics={"epochs": "8", "epoch-seconds": "0.4"}))
    d = wait_tuning(sm, name, timeout=400)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    ts = trials(sm, name)
    stopped = [t for t in ts if t["TrainingJobStatus"] == "Stopped"]
    assert stopped, [(t["TrainingJobStatus"], t.get("FinalHyperParameterTuningJobObjectiveMetric")) for t in ts]
    best = d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    for t in stopped:
        assert t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] < best


def test_stopping_a_tuning_job_stops_its_trials(sm, bucket, source):
    name = unique("stop")[:32]
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, max_jobs=6, parallel=2,
                                                          statics={"epochs": "30", "epoch-seconds": "1"}))
    deadline = time.time() + 60
    while not trials(sm, name) and time.time() < deadline:
        time.sleep(0.2)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    d = wait_tuning(sm, name, timeout=120)
    assert d["HyperParameterTuningJobStatus"] == "Stopped"
    ended = trials(sm, name)
    assert all(t["TrainingJobStatus"] in ("Stopped", "Completed", "Failed") for t in ended), \
        [(t["TrainingJobName"], t["TrainingJobStatus"]) for t in ended]
    assert len(ended) <= 2
    with pytest.raises(ClientError) as e:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_bad_requests_are_refused_as_aws_does(sm, bucket, source):
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**tuning_request(unique("bad")[:32], bucket, source, metric="loss"))
    assert "The objective metric loss is not one of the metric definitions" in str(e.value)
    req = tuning_request(unique("bad")[:32], bucket, source)
    req["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "validation:accuracy", "Regex": "acc=("}]
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**req)
    assert "is not a valid regular expression" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**tuning_request(unique("bad")[:32], bucket, source, strategy="Grid"))
    assert "The Grid strategy takes categorical" in str(e.value)
    req = tuning_request(unique("bad")[:32], bucket, source, strategy="Hyperband")
    req["HyperParameterTuningJobConfig"]["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**req)
    assert "StrategyConfig" in str(e.value)
    req = tuning_request(unique("bad")[:32], bucket, source)
    req["HyperParameterTuningJobConfig"]["TuningJobCompletionCriteria"] = {"ConvergenceDetected": {"CompleteOnConvergence": "Enabled"}}
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**req)
    assert "ConvergenceDetected" in str(e.value)
    with pytest.raises(ClientError) as e:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
    assert e.value.response["Error"]["Code"] == "ResourceNotFound"


@pytest.mark.parametrize("strategy", ["Bayesian", "Hyperband"])
def test_the_sdks_hyperparameter_tuner(server, strategy):
    out, _ = Run(server, sys.executable, os.path.join(HERE, "tune_v2.py"), strategy).result(timeout=600)
    assert out["status"] == "Completed"
    assert out["best"].startswith(out["name"] + "-")
    values = [r["FinalObjectiveValue"] for r in out["rows"]]
    assert len(out["rows"]) == 6 and out["best_value"] == max(v for v in values if v == v)
    assert out["attached_objective"] == "validation:accuracy"
    assert out["attached_ranges"] == ["act", "layers", "lr"]
    if strategy == "Bayesian":
        # tuner.deploy() served the best trial's model.
        trained = out["deployed"]["trained_with"]
        assert out["deployed"]["input"] == [1, 2]
        # The SDK sends a framework's categorical values JSON-encoded; the toolkit decodes them.
        assert trained["act"] == json.loads(out["best_hps"]["act"])
        assert str(trained["layers"]) == out["best_hps"]["layers"]


def test_clary_tuning_describe_lists_trials_best_first(server, sm, bucket, source):
    import subprocess
    from conftest import CLARY
    name = unique("cli")[:32]
    sm.create_hyper_parameter_tuning_job(**tuning_request(name, bucket, source, max_jobs=3, parallel=3, seed=1,
                                                          statics={"epoch-seconds": "0.01", "epochs": "1"}))
    d = wait_tuning(sm, name)
    out = subprocess.run([CLARY, "tuning", "describe", name], env=dict(os.environ, **server.env()),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("%s: Completed (Maximize validation:accuracy" % name)
    rows = [l.split() for l in lines[2:]]
    assert len(rows) == 3
    assert rows[0][0] == d["BestTrainingJob"]["TrainingJobName"]
    objectives = [float(r[2]) for r in rows]
    assert objectives == sorted(objectives, reverse=True)
    listed = subprocess.run([CLARY, "tuning", "list"], env=dict(os.environ, **server.env()),
                            capture_output=True, text=True, timeout=60)
    assert name in listed.stdout


def test_a_warm_start_builds_on_its_parents(sm, bucket, source):
    parent = unique("parent")[:32]
    sm.create_hyper_parameter_tuning_job(**tuning_request(parent, bucket, source, max_jobs=4, parallel=4, seed=5,
                                                          statics={"epoch-seconds": "0.01", "epochs": "1"}))
    running_child = tuning_request(unique("child")[:32], bucket, source, strategy="Bayesian", max_jobs=2)
    running_child["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
                                        "WarmStartType": "IdenticalDataAndAlgorithm"}
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**running_child)
    assert "must have ended" in str(e.value)
    parent_best = wait_tuning(sm, parent)["BestTrainingJob"]
    child = unique("child")[:32]
    req = tuning_request(child, bucket, source, strategy="Bayesian", max_jobs=2, parallel=1, seed=5,
                         statics={"epoch-seconds": "0.01", "epochs": "1"})
    req["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
                              "WarmStartType": "TransferLearning"}
    sm.create_hyper_parameter_tuning_job(**req)
    d = wait_tuning(sm, child)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["WarmStartConfig"]["WarmStartType"] == "TransferLearning"
    assert len(trials(sm, child)) == 2, "the parent's trials count toward no limit of the child"
    overall = d["OverallBestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert overall >= parent_best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert overall >= d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    other_metric = tuning_request(unique("child")[:32], bucket, source)
    other_metric["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": "loss=(\\S+)"}]
    other_metric["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] = "loss"
    other_metric["WarmStartConfig"] = req["WarmStartConfig"]
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**other_metric)
    assert "must share its objective metric" in str(e.value)


def test_the_sdks_tuner_create_with_two_estimators(server):
    out, _ = Run(server, sys.executable, os.path.join(HERE, "tune_v2.py"), "multi").result(timeout=600)
    assert out["status"] == "Completed"
    assert out["definitions"] == ["relu", "tanh"], "trials took the definitions in turn"
    assert len(out["rows"]) == 4
    assert out["attached_ranges"] == ["relu", "tanh"]


def test_autotune_chooses_ranges_from_the_static_hyperparameters(sm, bucket, source):
    name = unique("auto")[:32]
    req = tuning_request(name, bucket, source, max_jobs=3, parallel=3, seed=9,
                         statics={"epoch-seconds": "0.01", "epochs": "1", "lr": "0.01", "layers": "3"})
    del req["HyperParameterTuningJobConfig"]["ParameterRanges"]
    req["Autotune"] = {"Mode": "Enabled"}
    sm.create_hyper_parameter_tuning_job(**req)
    d = wait_tuning(sm, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["Autotune"] == {"Mode": "Enabled"}
    chosen = d["HyperParameterTuningJobConfig"]["ParameterRanges"]
    [lr] = [r for r in chosen["ContinuousParameterRanges"] if r["Name"] == "lr"]
    assert (float(lr["MinValue"]), float(lr["MaxValue"]), lr["ScalingType"]) == (0.001, 0.1, "Logarithmic")
    [layers] = [r for r in chosen["IntegerParameterRanges"] if r["Name"] == "layers"]
    assert (layers["MinValue"], layers["MaxValue"]) == ("1", "6")
    for t in trials(sm, name):
        assert 0.001 <= float(t["TunedHyperParameters"]["lr"]) <= 0.1
        assert 1 <= int(t["TunedHyperParameters"]["layers"]) <= 6
    bad = tuning_request(unique("auto")[:32], bucket, source)
    bad["Autotune"] = {"Mode": "Sometimes"}
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**bad)
    assert "autotune.mode" in str(e.value)


def test_a_search_that_stops_improving_completes_early(sm, bucket, source):
    name = unique("stall")[:32]
    req = tuning_request(name, bucket, source, max_jobs=30, parallel=1, seed=11,
                         statics={"epoch-seconds": "0.01", "epochs": "1"})
    req["HyperParameterTuningJobConfig"]["TuningJobCompletionCriteria"] = {
        "BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 3}}
    sm.create_hyper_parameter_tuning_job(**req)
    d = wait_tuning(sm, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["TuningJobCompletionDetails"]["NumberOfTrainingJobsObjectiveNotImproving"] >= 3
    ts = sorted(trials(sm, name), key=lambda t: t["TrainingJobName"])
    assert len(ts) < 30
    best_index = max(range(len(ts)), key=lambda i: ts[i]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert len(ts) - 1 - best_index >= 3, "it stopped only after three trials in a row did not improve"
