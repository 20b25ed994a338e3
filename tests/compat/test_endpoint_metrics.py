"""Endpoint metrics: CloudWatch's AWS/SageMaker namespace (Invocations, Invocation4XXErrors,
Invocation5XXErrors, ModelLatency, OverheadLatency by EndpointName and VariantName) read
through boto3 after a burst of invocations, and the server's Prometheus metrics parsed by the
prometheus_client package's OpenMetrics parser."""
import base64
import datetime
import urllib.error
import urllib.request

import botocore.exceptions
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import deploy, unique, wait_endpoint

# Echoes what it is sent; a body of "fail" makes the model's handler raise (an error answer).
ECHO = '''
def model_fn(model_dir):
    return None
def transform_fn(model, data, content_type, accept):
    if data in (b"fail", "fail"):
        raise ValueError("asked to fail")
    return data, accept
'''

BURST = 23


@pytest.fixture(scope="module")
def endpoint(server, sm, s3, bucket):
    name = unique("metrics")
    deploy(sm, s3, bucket, name, {"code/inference.py": ECHO})
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    rt = server.client("sagemaker-runtime")
    for i in range(BURST):
        out = rt.invoke_endpoint(EndpointName=name, Body=b"%d" % i, ContentType="text/plain")
        assert out["Body"].read() == b"%d" % i
    with pytest.raises(botocore.exceptions.ClientError):
        rt.invoke_endpoint(EndpointName=name, Body=b"fail", ContentType="text/plain")
    yield name
    sm.delete_endpoint(EndpointName=name)


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=10), now + datetime.timedelta(minutes=1)


def dims(name):
    return [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]


def test_cloudwatch_counts_match_the_invocations_sent(server, endpoint):
    cw = server.client("cloudwatch")
    start, end = window()
    stats = lambda metric, stat: cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName=metric, Dimensions=dims(endpoint),
        StartTime=start, EndTime=end, Period=3600, Statistics=[stat])["Datapoints"]
    calls = stats("Invocations", "Sum")
    assert sum(p["Sum"] for p in calls) == BURST + 1
    errors = [sum(p["Sum"] for p in stats(m, "Sum")) for m in ("Invocation4XXErrors", "Invocation5XXErrors")]
    assert sorted(errors) == [0, 1]
    rate = stats("Invocation4XXErrors" if errors[0] else "Invocation5XXErrors", "Average")
    assert abs(sum(p["Average"] for p in rate) - 1 / (BURST + 1)) < 1e-9
    latency = stats("ModelLatency", "Average")
    assert latency and latency[0]["Unit"] == "Microseconds" and latency[0]["Average"] > 0
    assert stats("OverheadLatency", "Maximum")[0]["Maximum"] >= 0

    data = cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[{
        "Id": "calls", "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
                                                 "Dimensions": dims(endpoint)},
                                      "Period": 60, "Stat": "Sum"}}])["MetricDataResults"]
    assert sum(data[0]["Values"]) == BURST + 1

    listed = cw.list_metrics(Namespace="AWS/SageMaker",
                             Dimensions=[{"Name": "EndpointName", "Value": endpoint}])["Metrics"]
    assert {m["MetricName"] for m in listed} == {
        "Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency", "OverheadLatency"}


def scrape(server, user, secret):
    req = urllib.request.Request(server.url + "/_clary/metrics")
    token = base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    return urllib.request.urlopen(req, timeout=30)


def test_prometheus_metrics_parse_and_count(server, endpoint):
    env = server.env()
    with scrape(server, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = lambda fam: [(s.name, s.labels, s.value) for s in families[fam].samples]

    invocations = [v for n, l, v in samples("clary_endpoint_invocations")
                   if l.get("endpoint") == endpoint and n.endswith("_total")]
    assert invocations == [BURST + 1]
    errors = [(l["class"], v) for n, l, v in samples("clary_endpoint_invocation_errors")
              if l.get("endpoint") == endpoint and n.endswith("_total")]
    # Both classes are series from the first invocation on (at zero until one happens).
    assert sorted(c for c, _ in errors) == ["4xx", "5xx"]
    assert sorted(v for _, v in errors) == [0, 1]
    counts = [v for n, l, v in samples("clary_endpoint_model_latency_seconds")
              if l.get("endpoint") == endpoint and n.endswith("_count")]
    assert counts == [BURST + 1]
    assert families["clary_jobs"].type == "gauge"
    assert any(l.get("resource") == "vcpus" and l.get("state") == "total" and v >= 1
               for _, l, v in samples("clary_capacity"))
    assert [v for _, _, v in samples("clary_object_store_bytes")][0] > 0
    instances = [l for _, l, _ in samples("clary_model_server_queue_depth") if l.get("endpoint") == endpoint]
    assert instances and instances[0]["variant"] == "AllTraffic"
    restarts = [v for n, l, v in samples("clary_model_server_worker_restarts")
                if l.get("endpoint") == endpoint and n.endswith("_total")]
    assert restarts == [0]


def test_prometheus_needs_the_servers_key_pair(server):
    env = server.env()
    for user, secret in [(env["AWS_ACCESS_KEY_ID"], "wrong"), ("someone", env["AWS_SECRET_ACCESS_KEY"])]:
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(server, user, secret)
        assert e.value.code == 401
        assert b"clary_" not in e.value.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url + "/_clary/metrics", timeout=10)
    assert e.value.code == 401
