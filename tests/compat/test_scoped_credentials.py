"""A training job signs with a key pair of its own, scoped to it: it reports as its job, reads
objects, writes only under its output and checkpoint prefixes, and may do nothing else. The
server's own key pair never reaches a job."""
import glob
import json
import os
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import job_request, unique, upload_code, wait_for, wait_secondary

SLEEPER = '''
import time
time.sleep(6)
'''


def client(server, service, key):
    e = server.env()
    return boto3.client(service, endpoint_url=e["AWS_ENDPOINT_URL"], region_name=e["AWS_DEFAULT_REGION"],
                        aws_access_key_id=key["access_key"], aws_secret_access_key=key["secret_key"],
                        config=Config(retries={"max_attempts": 0}))


def denied(call, code):
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403, err
    assert err["Error"]["Code"] == code, err
    return err["Error"]["Message"]


def test_a_jobs_credentials_are_scoped_to_it(server, sm, s3, bucket):
    job = unique("scoped")
    source = upload_code(s3, bucket, job, {"train.py": SLEEPER})
    s3.put_object(Bucket=bucket, Key="shared/data.csv", Body=b"1,2\n")
    sm.create_training_job(**job_request(job, bucket, source))
    wait_secondary(sm, job, "Training")
    [spec_path] = glob.glob(os.path.join(server.data_dir, "jobs", job, "*", "spec.json"))
    with open(spec_path) as f:
        key = json.load(f)
    admin = server.env()
    assert key["access_key"] != admin["AWS_ACCESS_KEY_ID"]
    assert admin["AWS_SECRET_ACCESS_KEY"] not in open(spec_path).read()

    job_sm, job_s3 = client(server, "sagemaker", key), client(server, "s3", key)
    message = denied(lambda: job_sm.list_training_jobs(), "AccessDeniedException")
    assert "training job %s" % job in message
    denied(lambda: job_sm.stop_training_job(TrainingJobName=job), "AccessDeniedException")
    denied(lambda: client(server, "logs", key).describe_log_groups(), "AccessDeniedException")
    denied(lambda: client(server, "sagemaker-runtime", key).invoke_endpoint(EndpointName="x", Body=b"1"),
           "AccessDenied")
    denied(lambda: client(server, "sts", key).get_caller_identity(), "AccessDenied")

    # Reads anywhere, as an execution role with S3 read access.
    assert job_s3.get_object(Bucket=bucket, Key="shared/data.csv")["Body"].read() == b"1,2\n"
    assert job_s3.list_objects_v2(Bucket=bucket, Prefix="shared/")["KeyCount"] == 1
    # Writes only under the job's own output prefix.
    job_s3.put_object(Bucket=bucket, Key="output/%s/extra.txt" % job, Body=b"mine")
    message = denied(lambda: job_s3.put_object(Bucket=bucket, Key="shared/data.csv", Body=b"overwritten"),
                     "AccessDenied")
    assert "s3://%s/output/%s/" % (bucket, job) in message
    denied(lambda: job_s3.delete_object(Bucket=bucket, Key="shared/data.csv"), "AccessDenied")
    denied(lambda: job_s3.create_bucket(Bucket=unique("nope")), "AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="shared/data.csv")["Body"].read() == b"1,2\n"

    assert wait_for(sm, job)["TrainingJobStatus"] == "Completed"
    # Another job's key does not report for this one.
    other = unique("scoped")
    sm.create_training_job(**job_request(other, bucket, source))
    wait_secondary(sm, other, "Training")
    [other_spec] = glob.glob(os.path.join(server.data_dir, "jobs", other, "*", "spec.json"))
    with open(other_spec) as f:
        other_key = json.load(f)
    assert other_key["access_key"] != key["access_key"]
    assert wait_for(sm, other)["TrainingJobStatus"] == "Completed"
