"""`AlgorithmSpecification.ContainerEntrypoint` and `ContainerArguments` (what the SDK v3 sends for
SourceCode) through boto3: the command runs instead of the toolkit, under /opt/ml at its real
path, with the runtime's python3 and pip first on PATH; its exit code, stop and max runtime are
handled as a script's. Also the IAM and STS answers the SDK v3 checks before it trains."""
import io
import tarfile
import time

import botocore.exceptions
import pytest

from conftest import IMAGE, ROLE, log_text, tagged, unique, upload_code, job_request, wait_for, wait_secondary
from test_hardening_store import _may_make_mounts


def container_job(job, bucket, arguments, entrypoint=("/bin/sh",), channels=None, max_run=120, hps=None):
    req = dict(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                "ContainerEntrypoint": list(entrypoint),
                                "ContainerArguments": list(arguments)},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://%s/output" % bucket},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": max_run},
        HyperParameters=hps or {"lr": "0.5"},
    )
    if channels:
        req["InputDataConfig"] = [
            {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}
            for name, uri in channels.items()]
    return req


# The job's command, kept in its channel (an argument holds at most 256 characters): chmods and
# rewrites an input file and runs it, prints what it sees as one JSON line (python3 from PATH
# reads /opt/ml by its real paths), checks pip and saves a model file by the hard-coded path.
JOB_SH = b"""set -e
cd /opt/ml/input/data/train
chmod +x run.sh
printf 'echo changed' > run.sh
./run.sh
python3 facts.py
pip --version
echo saved > /opt/ml/model/by-entrypoint.txt
"""
FACTS_PY = b"""import json, os, shutil, sys, mxnet
print("FACTS " + json.dumps({
    "python": sys.executable, "pip": shutil.which("pip"), "pip3": shutil.which("pip3"),
    "mxnet": mxnet.__version__, "cwd": os.getcwd(),
    "hps": json.load(open("/opt/ml/input/config/hyperparameters.json")),
    "channels": json.load(open("/opt/ml/input/config/inputdataconfig.json")),
    "train": sorted(os.listdir("/opt/ml/input/data/train")),
    "job": os.environ["TRAINING_JOB_NAME"], "sm_channel_train": os.environ["SM_CHANNEL_TRAIN"],
}), flush=True)
"""


def test_an_entrypoint_runs_instead_of_the_toolkit_under_opt_ml(sm, s3, logs, bucket):
    job = unique("entry")
    for name, body in (("run.sh", b"echo original\n"), ("job.sh", JOB_SH), ("facts.py", FACTS_PY)):
        s3.put_object(Bucket=bucket, Key="%s/data/%s" % (job, name), Body=body)
    args = ["/opt/ml/input/data/train/job.sh"]
    req = container_job(job, bucket, args, channels={"train": "s3://%s/%s/data" % (bucket, job)})
    sm.create_training_job(**req)
    d = wait_for(sm, job)
    text = log_text(logs, job)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), text[-3000:])
    assert d["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/sh"]
    assert d["AlgorithmSpecification"]["ContainerArguments"] == args
    facts = tagged(text, "FACTS")
    assert facts["hps"] == {"lr": "0.5"} and facts["job"] == job
    assert list(facts["channels"]) == ["train"] and facts["train"] == ["facts.py", "job.sh", "run.sh"]
    assert facts["mxnet"] == "1.9.1"  # the runtime's python3
    assert facts["pip"] == facts["python"].rsplit("/", 1)[0] + "/pip"
    assert facts["cwd"] == "/opt/ml/input/data/train"
    assert "Invoking user script" not in text  # the toolkit did not run
    assert "changed" in text.splitlines()
    # The chmod and the rewrite were the job's own: the stored object is as it was.
    assert s3.get_object(Bucket=bucket, Key=job + "/data/run.sh")["Body"].read() == b"echo original\n"
    bucket_, key = d["ModelArtifacts"]["S3ModelArtifacts"][len("s3://"):].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket_, Key=key)["Body"].read())) as t:
        assert t.extractfile("by-entrypoint.txt").read() == b"saved\n"


def test_an_entrypoints_exit_code_fails_the_job_with_its_failure_file_or_the_command(sm, s3, logs, bucket):
    plain, own = unique("entry-exit"), unique("entry-failure")
    sm.create_training_job(**container_job(plain, bucket, ["-c", "echo about to fail; exit 5"]))
    sm.create_training_job(**container_job(own, bucket, ["-c", "printf 'my reason' > /opt/ml/output/failure; exit 2"]))
    d = wait_for(sm, plain)
    assert d["TrainingJobStatus"] == "Failed"
    assert "ExitCode 5" in d["FailureReason"] and "/bin/sh -c" in d["FailureReason"], d["FailureReason"]
    assert "about to fail" in log_text(logs, plain)
    d = wait_for(sm, own)
    assert (d["TrainingJobStatus"], d["FailureReason"]) == ("Failed", "AlgorithmError: my reason")


def test_an_entrypoint_is_stopped_and_timed_out_like_a_script(sm, s3, logs, bucket):
    stopped, timed = unique("entry-stop"), unique("entry-maxrun")
    loop = "trap 'echo got SIGTERM; echo kept > /opt/ml/model/kept.txt; exit 0' TERM; echo started; while true; do sleep 0.1; done"
    sm.create_training_job(**container_job(stopped, bucket, ["-c", loop]))
    sm.create_training_job(**container_job(timed, bucket, ["-c", "echo started; sleep 60"], max_run=3))
    wait_secondary(sm, stopped, "Training")
    for _ in range(100):
        if "started" in log_text(logs, stopped).splitlines():
            break
        time.sleep(0.1)
    sm.stop_training_job(TrainingJobName=stopped)
    d = wait_for(sm, stopped)
    assert d["TrainingJobStatus"] == "Stopped", d.get("FailureReason")
    assert "got SIGTERM" in log_text(logs, stopped)
    assert d["ModelArtifacts"]["S3ModelArtifacts"].endswith("/model.tar.gz")
    d = wait_for(sm, timed)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded"), d.get("FailureReason")


def test_container_arguments_without_an_entrypoint_are_refused_not_dropped(sm, bucket):
    req = container_job(unique("args-only"), bucket, ["train"])
    del req["AlgorithmSpecification"]["ContainerEntrypoint"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**req)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "ContainerEntrypoint" in e.value.response["Error"]["Message"]


def test_a_script_with_hard_coded_opt_ml_paths_finds_them(sm, s3, logs, bucket):
    """Script mode gets /opt/ml at its real path too, where the agent may make a namespace."""
    if not _may_make_mounts():
        pytest.skip("this process may not make mount namespaces; script mode then keeps SM_* paths only")
    job = unique("optml-script")
    script = ("import json, os\n"
              "hps = json.load(open('/opt/ml/input/config/hyperparameters.json'))\n"
              "open('/opt/ml/model/hard.txt', 'w').write(hps['word'])\n"
              "print('SEEN ' + json.dumps({'word': hps['word'], 'same': os.path.samefile('/opt/ml/model', os.environ['SM_MODEL_DIR'])}))\n")
    source = upload_code(s3, bucket, job, {"train.py": script})
    sm.create_training_job(**job_request(job, bucket, source, hps={"word": '"hello"'}))
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    # hyperparameters.json keeps the values as sent (JSON-encoded, as the SDK sends them).
    assert tagged(log_text(logs, job), "SEEN") == {"word": '"hello"', "same": True}


def test_iam_answers_what_the_sdk_v3_checks(server):
    iam, sts = server.client("iam"), server.client("sts")
    ident = sts.get_caller_identity()
    account = ident["Account"]
    # The caller is a session of a role (as in a SageMaker notebook), so role=None resolves.
    assert ident["Arn"] == "arn:aws:sts::%s:assumed-role/SageMakerRole/clary" % account
    role = iam.get_role(RoleName="SageMakerRole")["Role"]
    assert role["Arn"] == "arn:aws:iam::%s:role/SageMakerRole" % account
    assert ident["UserId"] == role["RoleId"] + ":clary"
    # botocore decodes the URL-encoded trust policy into a dict.
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    actions = ["sagemaker:CreateTrainingJob", "s3:GetObject", "logs:PutLogEvents"]
    out = iam.simulate_principal_policy(PolicySourceArn=role["Arn"], ActionNames=actions)
    assert out["IsTruncated"] is False
    assert [(r["EvalActionName"], r["EvalDecision"], r["EvalResourceName"]) for r in out["EvaluationResults"]] == \
        [(a, "allowed", "*") for a in actions]
    assert out["EvaluationResults"][0]["MatchedStatements"][0]["SourcePolicyType"] == "role"
    assert out["EvaluationResults"][0]["MissingContextValues"] == []
    arns = ["arn:aws:s3:::sagemaker-us-east-1-%s/*" % account, "arn:aws:s3:::other"]
    out = iam.simulate_principal_policy(PolicySourceArn=role["Arn"], ActionNames=["s3:PutObject"], ResourceArns=arns)
    assert [(r["EvalResourceName"], r["EvalDecision"]) for r in out["EvaluationResults"]] == [(a, "allowed") for a in arns]
    for r, arn in zip(out["EvaluationResults"], arns):
        assert r["ResourceSpecificResults"] == [{"EvalResourceName": arn, "EvalResourceDecision": "allowed",
                                                 "MatchedStatements": r["MatchedStatements"], "MissingContextValues": []}]
    pages = list(iam.get_paginator("simulate_principal_policy").paginate(PolicySourceArn=role["Arn"], ActionNames=actions))
    assert len(pages) == 1 and len(pages[0]["EvaluationResults"]) == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.simulate_principal_policy(PolicySourceArn="role-name-not-an-arn", ActionNames=actions)
    assert e.value.response["Error"]["Code"] == "ValidationError"
