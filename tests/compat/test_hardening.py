"""Issue 15's hardening: another local user gets nothing from the data directory, requests are
refused on what their signature covers, and hostile input is refused with AWS's errors."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import Server, deploy, job_request, unique, upload_code, wait_endpoint, wait_for

TRAIN = '''
import os
data = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "rows.csv")).read()
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
    f.write(data)
'''

TRANSFORM = '''
import json
def model_fn(model_dir):
    return {"scale": 2}
def transform_fn(model, data, content_type, accept):
    return json.dumps([v * model["scale"] for v in json.loads(data)]), "application/json"
'''


@pytest.fixture(scope="module")
def private_server():
    """A server whose data dir another user could reach if its modes let them: its parent is
    0755, and the data dir is made 0755 before the server starts (as an older clary left it)."""
    base = tempfile.mkdtemp(prefix="clary-private-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    os.makedirs(data)
    os.chmod(data, 0o755)
    s = Server(data).start()
    yield s
    s.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def modes_after_a_job_and_an_endpoint(private_server):
    """Runs a training job and an endpoint, then returns ({path: mode} of every file and
    directory under the data dir with group or other bits, the host specs found)."""
    srv = private_server
    sm, s3 = srv.client("sagemaker"), srv.client("s3")
    bucket = unique("private")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/rows.csv", Body=b"1,2,3\n")
    job = unique("private")
    source = upload_code(s3, bucket, job, {"train.py": TRAIN})
    sm.create_training_job(**job_request(job, bucket, source, channels={"train": "s3://%s/data" % bucket}))
    d = wait_for(sm, job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    name = unique("private")
    deploy(sm, s3, bucket, name, {"code/inference.py": TRANSFORM})
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    data = srv.data_dir
    offenders, specs = {}, []
    for root, dirs, files in os.walk(data):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                offenders[os.path.relpath(p, data)] = "%o" % stat.S_IMODE(st.st_mode)
            if n == "spec.json":
                specs.append(p)
    srv.delete_endpoints()
    return offenders, specs


def extracted(path):
    """Whether a path under the data dir was written by unpacking an archive (a job's code, an
    instance's model data)."""
    return "/opt_ml/code/" in path or (path.startswith("endpoints/") and "/model/" in path)


def test_data_dir_is_private_after_a_job_and_an_endpoint(private_server, modes_after_a_job_and_an_endpoint):
    offenders, specs = modes_after_a_job_and_an_endpoint
    data = private_server.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    written = {p: m for p, m in offenders.items() if not extracted(p)}
    assert not written, "group/other bits under the data dir: %s" % written
    assert specs, "no host spec was found under the data dir"
    for n in ("identity.json", "clary.db", "clary.db-wal", "server.json"):
        assert os.path.exists(os.path.join(data, n)), n


def test_extracted_code_and_model_data_are_private_too(modes_after_a_job_and_an_endpoint):
    offenders, _ = modes_after_a_job_and_an_endpoint
    assert not offenders, "group/other bits on extracted files: %s" % offenders


def as_nobody(*argv):
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_another_user_reads_nothing_under_the_data_dir(private_server):
    srv = private_server
    s3 = srv.client("s3")
    bucket = unique("nobody")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"the object's bytes")
    data = srv.data_dir
    # The proof that nobody can run commands here and reach the data dir's parent.
    assert as_nobody("ls", os.path.dirname(data)).returncode == 0
    stored = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(data, "objects")) for f in fs
              if open(os.path.join(r, f), "rb").read() == b"the object's bytes"]
    assert stored, "the stored object was not found under objects/"
    specs = [os.path.join(r, f) for r, _, fs in os.walk(data) for f in fs if f == "spec.json"]
    targets = [os.path.join(data, "identity.json"), os.path.join(data, "clary.db"), stored[0]] + specs[:1]
    for path in targets:
        r = as_nobody("cat", path)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r)
    r = as_nobody("ls", data)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r


def send(server, method, path, headers, body=b"", sign_as=None, after_signing=None):
    """Sends a raw request, signed by botocore for `sign_as` (a service name) if given; headers
    in `after_signing` are added once the signature is made. Returns (status, headers, body)."""
    url = server.url + path
    if sign_as:
        e = server.env()
        req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(Credentials(e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"]), sign_as, e["AWS_DEFAULT_REGION"]).add_auth(req)
        headers = dict(req.headers.items())
    headers = dict(headers, **(after_signing or {}))
    r = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_the_operation_must_be_signed(server, sm):
    """A DescribeTrainingJob signed without X-Amz-Target must not be replayable as a Stop."""
    job = unique("unsigned-target")
    body = json.dumps({"TrainingJobName": job}).encode()
    status, _, answer = send(server, "POST", "/", {"Content-Type": "application/x-amz-json-1.1"}, body,
                             sign_as="sagemaker", after_signing={"X-Amz-Target": "SageMaker.StopTrainingJob"})
    err = json.loads(answer)
    assert (status, err["__type"]) == (403, "InvalidSignatureException"), answer
    assert err["message"] == "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
    # Signed as botocore signs it, the same call reaches the API.
    status, _, answer = send(server, "POST", "/", {"Content-Type": "application/x-amz-json-1.1",
                                                   "X-Amz-Target": "SageMaker.StopTrainingJob"}, body, sign_as="sagemaker")
    assert status == 400 and "ValidationException" in answer.decode(), answer


@pytest.mark.parametrize("channel", ["..", "."])
def test_channel_names_that_name_directories_are_refused(sm, s3, bucket, channel):
    job = unique("dotdot")
    source = upload_code(s3, bucket, job, {"train.py": TRAIN})
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**job_request(job, bucket, source, channels={channel: "s3://%s/data" % bucket}))
    err = e.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert err["Message"] == (
        "1 validation error detected: Value '%s' at 'inputDataConfig.1.member.channelName' failed to satisfy "
        "constraint: Member must not be '.' or '..', which name a directory and not a channel" % channel)
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName=job)


def test_clary_env_prints_the_key_pair_the_server_was_started_with(tmp_path):
    srv = Server(tmp_path / "data", ["--access-key", "AKIAGIVENBYFLAG0001", "--secret-key", "given/secret+key"]).start()
    try:
        e = srv.env()
        assert (e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"]) == ("AKIAGIVENBYFLAG0001", "given/secret+key")
        assert srv.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
        assert stat.S_IMODE(os.stat(tmp_path / "data" / "server.json").st_mode) == 0o600
    finally:
        srv.stop()


def test_a_mangled_authorization_gets_its_own_services_refusal(server):
    mangled = {"Authorization": "AWS4-HMAC-SHA256 garbage"}
    status, headers, body = send(server, "POST", "/endpoints/some-endpoint/invocations",
                                 dict(mangled, **{"Content-Type": "application/json"}), b"[1]")
    assert status == 403 and headers["Content-Type"].startswith("application/x-amz-json"), body
    assert json.loads(body)["__type"] == "IncompleteSignature"
    status, headers, body = send(server, "POST", "/", dict(mangled, **{"Content-Type": "application/x-www-form-urlencoded"}),
                                 b"Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 403 and b"<ErrorResponse><Error><Type>Sender</Type><Code>IncompleteSignature</Code>" in body, body
    # A credential naming STS, the rest of the header cut off.
    status, _, body = send(server, "POST", "/", {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/sts/aws4_request"},
                           b"Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 403 and b"<Code>IncompleteSignature</Code>" in body, body
    # Without any Authorization, InvokeEndpoint is still SageMaker Runtime's to refuse.
    status, _, body = send(server, "POST", "/endpoints/some-endpoint/invocations", {"Content-Type": "application/json"}, b"[1]")
    assert status == 403 and json.loads(body)["__type"] == "MissingAuthenticationToken", body


def rss_mib(pid, field):
    text = open("/proc/%d/status" % pid).read()
    return int(text.split(field + ":")[1].split()[0]) // 1024


def post_many(server, path, headers, size, count):
    """`count` concurrent raw posts of `size` bytes; returns their statuses."""
    import socket
    import threading
    host, port = server.url[len("http://"):].split(":")
    statuses = []

    def one():
        s = socket.create_connection((host, int(port)))
        head = "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Length: %d\r\n%s\r\n" % (
            path, host, port, size, "".join("%s: %s\r\n" % kv for kv in headers.items()))
        try:
            s.sendall(head.encode())
            s.sendall(b"x" * size)
        except OSError:
            pass  # refused before the body was read: the server may close early
        s.settimeout(60)
        try:
            statuses.append(int(s.recv(64).split()[1]))
        except (OSError, IndexError):
            statuses.append(None)
        s.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return statuses


def test_unsigned_bodies_are_refused_unread_and_read_bodies_are_bounded(tmp_path):
    import datetime
    srv = Server(tmp_path / "data").start()
    try:
        pid = srv.proc.pid
        before = rss_mib(pid, "VmRSS")
        statuses = post_many(srv, "/", {"X-Amz-Target": "SageMaker.ListTrainingJobs"}, 15_000_000, 24)
        assert statuses == [403] * 24, statuses
        unsigned_peak = rss_mib(pid, "VmHWM")
        assert unsigned_peak - before < 40, (before, unsigned_peak)
        # Headers that pass (known key, fresh date) with a signature that will not: the bodies
        # are read, but only as many at once as the in-flight budget holds.
        e = srv.env()
        now = datetime.datetime.now(datetime.timezone.utc)
        auth = ("AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/sagemaker/aws4_request, "
                "SignedHeaders=host;x-amz-date;x-amz-target, Signature=%s" % (e["AWS_ACCESS_KEY_ID"], now.strftime("%Y%m%d"), "0" * 64))
        statuses = post_many(srv, "/", {"X-Amz-Target": "SageMaker.ListTrainingJobs", "X-Amz-Date": now.strftime("%Y%m%dT%H%M%SZ"),
                                        "Authorization": auth}, 15_000_000, 24)
        assert statuses == [403] * 24, statuses
        peak = rss_mib(pid, "VmHWM")
        # 24 x 15 MB read at once would be 360 MB; the budget is 128 MiB.
        assert peak - before < 200, (before, peak)
        # A declared length over the limit is refused without reading it.
        assert post_many(srv, "/", {"X-Amz-Target": "SageMaker.ListTrainingJobs", "X-Amz-Date": now.strftime("%Y%m%dT%H%M%SZ"),
                                    "Authorization": auth}, 17 * 1024 * 1024, 1) == [413]
    finally:
        srv.stop()


def test_calls_and_refusals_leave_one_bounded_line_each_in_the_log(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        log = os.path.join(srv.data_dir, "server.log")
        start = os.path.getsize(log)
        status, _, _ = send(srv, "PUT", "/bucket/key", {}, b"hello")
        assert status == 403
        status, _, _ = send(srv, "POST", "/", {"X-Amz-Target": "SageMaker.ListTrainingJobs"}, b"{}")
        assert status == 403
        s3 = srv.client("s3")
        s3.create_bucket(Bucket="logged")
        body = b"<Delete><Object><Key>" + b"A" * 6_000_000
        import base64
        import hashlib
        status, _, answer = send(srv, "POST", "/logged?delete", {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                                                                 "x-amz-content-sha256": hashlib.sha256(body).hexdigest()},
                                 body, sign_as="s3")
        assert status == 400 and b"MalformedXML" in answer, answer
        time.sleep(0.3)
        with open(log, "rb") as f:
            f.seek(start)
            written = f.read()
        assert len(written) < 3000, (len(written), written[:600])
        assert b"ERROR" not in written, written
        # Three refusals and the bucket's creation: one API log line each.
        assert written.count(b"\n") == 4, written
        assert written.count(b"api call refused") == 3, written
    finally:
        srv.stop()


def test_delete_objects_names_at_most_1000_keys(s3, bucket):
    s3.put_object(Bucket=bucket, Key="kept/one", Body=b"1")
    keys = [{"Key": "kept/one"}] + [{"Key": "absent/%d" % i} for i in range(1000)]
    with pytest.raises(ClientError) as e:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    err = e.value.response["Error"]
    assert (err["Code"], err["Message"]) == (
        "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
    assert s3.get_object(Bucket=bucket, Key="kept/one")["Body"].read() == b"1"
    assert s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[:1000], "Quiet": True})["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_presigned_urls_are_valid_for_a_week_at_most(server, bucket):
    # SigV4 presigning (X-Amz-Expires); SigV2's absolute Expires has no such limit on S3.
    s3 = server.client("s3", signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="presigned", Body=b"shared")
    week = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"}, ExpiresIn=604800)
    with urllib.request.urlopen(week, timeout=30) as r:
        assert r.read() == b"shared"
    longer = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"}, ExpiresIn=604801)
    assert "X-Amz-Expires=604801" in longer
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(longer, timeout=30)
    body = e.value.read().decode()
    assert e.value.code == 400
    assert "<Code>AuthorizationQueryParametersError</Code>" in body, body
    assert "<Message>X-Amz-Expires must be less than a week (in seconds) that is; 604800</Message>" in body, body


def test_page_sizes_below_one_are_refused(server):
    # With parameter validation off boto3 sends what it is given, as the AWS CLI's --max-items can.
    sm = server.client("sagemaker", parameter_validation=False)
    logs = server.client("logs", parameter_validation=False)
    for call, value, at in [
        (lambda: sm.list_training_jobs(MaxResults=-1), "-1", "maxResults"),
        (lambda: sm.list_training_jobs(MaxResults=0), "0", "maxResults"),
        (lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", limit=-1), "-1", "limit"),
        (lambda: logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="s", limit=-1), "-1", "limit"),
        (lambda: logs.describe_log_groups(limit=-1), "-1", "limit"),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        err = e.value.response["Error"]
        assert (err["Code"], err["Message"]) == ("ValidationException", (
            "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1" % (value, at))), err
    assert sm.list_training_jobs(MaxResults=1)["ResponseMetadata"]["HTTPStatusCode"] == 200
