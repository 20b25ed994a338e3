"""Training metrics read from the job's log lines by its MetricDefinitions: the describe's
FinalMetricDataList, CloudWatch over JSON 1.0 and the query protocol, and the SDK's
TrainingJobAnalytics, unchanged."""
import os
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import job_request, log_text, unique, upload_code, wait_for
from test_sdk_training import HERE, Run

SCRIPT = open(os.path.join(HERE, "metrics", "train.py")).read()
DEFINITIONS = [
    {"Name": "validation:accuracy", "Regex": r"Validation-accuracy=([0-9\.]+)"},
    {"Name": "train:loss", "Regex": r"Train-loss=([0-9\.]+)"},
    {"Name": "never", "Regex": r"nothing-prints=(\d+)"},
    {"Name": "words", "Regex": r"acc=(\w+)"},
]
NAMESPACE = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def metric_job(server, sm, s3, bucket):
    job = unique("metrics")
    source = upload_code(s3, bucket, job, {"train.py": SCRIPT})
    req = job_request(job, bucket, source)
    req["AlgorithmSpecification"]["MetricDefinitions"] = DEFINITIONS
    sm.create_training_job(**req)
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    return job, d


def test_final_metrics_and_what_never_matched(metric_job, logs):
    job, d = metric_job
    finals = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert finals == {"validation:accuracy": pytest.approx(0.8), "train:loss": pytest.approx(0.25)}
    assert d["AlgorithmSpecification"]["MetricDefinitions"] == DEFINITIONS
    text = log_text(logs, job)
    assert 'metric never: no line of the job\'s log matched the regex "nothing-prints=(\\\\d+)"' in text, text[-2000:]
    assert text.count("metric words:") == 1 and '"high", which is not a number' in text


def test_cloudwatch_json_protocol(metric_job, server):
    job, d = metric_job
    cw = server.client("cloudwatch")
    dims = [{"Name": "TrainingJobName", "Value": job}]
    start, end = d["TrainingStartTime"], d["TrainingEndTime"]
    stats = cw.get_metric_statistics(Namespace=NAMESPACE, MetricName="validation:accuracy", Dimensions=dims,
                                     StartTime=start.timestamp() - 60, EndTime=end.timestamp() + 60, Period=3600,
                                     Statistics=["Average", "Maximum", "SampleCount"])
    [point] = stats["Datapoints"]
    assert point["SampleCount"] == 4 and point["Maximum"] == pytest.approx(0.8)
    assert point["Average"] == pytest.approx(0.65)
    per_host = cw.get_metric_statistics(
        Namespace=NAMESPACE, MetricName="train:loss", Period=3600, Statistics=["Minimum"],
        Dimensions=[{"Name": "Host", "Value": job + "/algo-1"}] + dims,
        StartTime=start.timestamp() - 60, EndTime=end.timestamp() + 60)
    assert per_host["Datapoints"][0]["Minimum"] == pytest.approx(0.25)
    listed = cw.list_metrics(Namespace=NAMESPACE, Dimensions=dims)["Metrics"]
    assert {(m["MetricName"], len(m["Dimensions"])) for m in listed} == {
        ("validation:accuracy", 1), ("validation:accuracy", 2), ("train:loss", 1), ("train:loss", 2)}
    data = cw.get_metric_data(
        StartTime=start.timestamp() - 60, EndTime=end.timestamp() + 60, ScanBy="TimestampAscending",
        MetricDataQueries=[{"Id": "acc", "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": "validation:accuracy", "Dimensions": dims},
            "Period": 1, "Stat": "Maximum"}}])
    [result] = data["MetricDataResults"]
    assert result["StatusCode"] == "Complete" and result["Values"][-1] == pytest.approx(0.8)
    assert len(result["Values"]) >= 2 and result["Timestamps"] == sorted(result["Timestamps"])
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace=NAMESPACE, MetricName="x", Dimensions=dims, Period=60,
                                 StartTime=start, EndTime=end, Statistics=["Median"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_cloudwatch_query_protocol(metric_job, server):
    """Older botocore and the AWS CLI v1 speak the query protocol to CloudWatch."""
    job, d = metric_job
    env = server.env()
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["TrainingStartTime"].timestamp() - 60))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["TrainingEndTime"].timestamp() + 60))
    form = {"Action": "GetMetricStatistics", "Version": "2010-08-01", "Namespace": NAMESPACE,
            "MetricName": "validation:accuracy", "Dimensions.member.1.Name": "TrainingJobName",
            "Dimensions.member.1.Value": job, "StartTime": start, "EndTime": end, "Period": "3600",
            "Statistics.member.1": "Average"}
    req = AWSRequest(method="POST", url=env["AWS_ENDPOINT_URL"] + "/", data=form,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "monitoring",
              env["AWS_DEFAULT_REGION"]).add_auth(req)
    import urllib.request
    prepared = req.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    with urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, method="POST",
                                                       headers=dict(prepared.headers))) as r:
        root = ET.fromstring(r.read())
    ns = {"cw": "http://monitoring.amazonaws.com/doc/2010-08-01/"}
    averages = root.findall(".//cw:Datapoints/cw:member/cw:Average", ns)
    assert [float(a.text) for a in averages] == [pytest.approx(0.65)]
    assert root.find(".//cw:Datapoints/cw:member/cw:Timestamp", ns).text.endswith("Z")


def test_a_bad_regex_is_refused(sm, s3, bucket):
    job = unique("badregex")
    req = job_request(job, bucket, "s3://%s/none.tar.gz" % bucket)
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "acc", "Regex": "acc=("}]
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert 'The regex "acc=(" of metric acc is not a valid regular expression' in str(e.value)


def test_the_sdks_training_job_analytics(server):
    out, _ = Run(server, sys.executable, os.path.join(HERE, "metrics_v2.py")).result()
    names = {r["metric_name"] for r in out["rows"]}
    assert names == {"validation:accuracy", "train:loss"}
    [accuracy] = [r for r in out["direct"] if r["metric_name"] == "validation:accuracy"]
    assert accuracy["value"] == pytest.approx(0.65)


def test_clary_jobs_metrics_prints_latest_values_and_a_chart(metric_job, server):
    import subprocess
    from conftest import CLARY
    job, _ = metric_job
    out = subprocess.run([CLARY, "jobs", "metrics", job], env=dict(os.environ, **server.env()),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:] if line.strip()}
    assert rows["validation:accuracy"][1] == "0.800000"
    assert rows["validation:accuracy"][2:5] == ["0.500000", "0.800000", "4"]
    assert rows["never"][1] == "-"
    assert any(c in out.stdout for c in "▁▂▃▄▅▆▇█")
    assert "Training job %s: Completed" % job in out.stdout
