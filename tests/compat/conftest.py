"""Starts real `clary server` processes on free loopback ports and gives tests real clients
(boto3 with the environment exactly as `clary env` prints it)."""
import io
import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import time
import uuid

import boto3
import pytest
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLARY = os.environ.get("CLARY_BIN", os.path.join(ROOT, "target", "debug", "clary"))
RUNTIMES = os.environ.get("CLARY_RUNTIMES_DIR", os.path.expanduser("~/.cache/clary/runtimes"))
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"


class Server:
    """One `clary server` process, started and ended by PID."""

    def __init__(self, data_dir, extra_args=(), listen="127.0.0.1:0", env=None):
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args)
        self.listen = listen
        self.environment = dict(os.environ, **(env or {}))
        self.proc = None
        self.url = None

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        # The server's log sits in its data dir, which is private: so is the log.
        log = os.fdopen(os.open(os.path.join(self.data_dir, "server.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self.proc = subprocess.Popen(
            [CLARY, "server", "--listen", self.listen, "--data-dir", self.data_dir,
             "--runtimes-dir", RUNTIMES, "--stop-grace-secs", "3", *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, text=True, env=self.environment)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, "server did not start: %r" % line
        self.url = m.group(1)
        self.listen = self.url[len("http://"):]
        return self

    def delete_endpoints(self, timeout=60):
        """Endpoints' model servers outlive a server restart by design, so a test run deletes
        its endpoints through the API before it ends the server."""
        if not (self.proc and self.proc.poll() is None):
            return
        sm = self.client("sagemaker")
        for e in sm.list_endpoints(MaxResults=100)["Endpoints"]:
            if e["EndpointStatus"] != "Deleting":
                sm.delete_endpoint(EndpointName=e["EndpointName"])
        deadline = time.time() + timeout
        while sm.list_endpoints(MaxResults=100)["Endpoints"] and time.time() < deadline:
            time.sleep(0.2)

    def stop(self, sig=signal.SIGTERM, keep_endpoints=False):
        if not keep_endpoints:
            self.delete_endpoints()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def env(self):
        """The variables `clary env` prints, parsed."""
        out = subprocess.run([CLARY, "env", "--data-dir", self.data_dir], check=True, capture_output=True, text=True).stdout
        env = {}
        for line in out.splitlines():
            k, v = line[len("export "):].split("=", 1)
            env[k] = shlex.split(v)[0]
        return env

    def client(self, service, **kw):
        e = self.env()
        cfg = Config(retries={"max_attempts": 1}, **kw)
        return boto3.client(service, endpoint_url=e["AWS_ENDPOINT_URL"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"], region_name=e["AWS_DEFAULT_REGION"], config=cfg)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("clary")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def sm(server):
    return server.client("sagemaker")


@pytest.fixture(scope="session")
def s3(server):
    return server.client("s3")


@pytest.fixture(scope="session")
def logs(server):
    return server.client("logs")


@pytest.fixture(scope="session")
def rt(server):
    return server.client("sagemaker-runtime", read_timeout=70)


@pytest.fixture(scope="session")
def bucket(s3):
    name = "test-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


class Rgw:
    """A real Ceph RADOS Gateway on loopback: the external S3 store of the tests that put
    Clary's data in one. `log_path` is radosgw's log, whose `beast:` lines record every
    request it served (method, path and query, who signed it, status)."""

    def __init__(self, endpoint, access_key, secret_key, log_path):
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = log_path

    def client(self, **kw):
        """boto3 straight to the store (not through Clary)."""
        cfg = Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}, **kw)
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1", config=cfg)

    def log_size(self):
        return os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0

    def requests_since(self, offset):
        """The request lines radosgw logged after `offset` (from `log_size()`)."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if " beast: " in line]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    """The store scripts/test.sh started (CLARY_TEST_S3_* in the environment), or one started
    here with scripts/ceph-rgw/start.sh where Ceph is installed and we are root."""
    if os.environ.get("CLARY_TEST_S3_ENDPOINT"):
        yield Rgw(os.environ["CLARY_TEST_S3_ENDPOINT"], os.environ["CLARY_TEST_S3_ACCESS_KEY"],
                  os.environ["CLARY_TEST_S3_SECRET_KEY"], os.environ["CLARY_TEST_S3_LOG"])
        return
    import shutil
    if not shutil.which("radosgw") or os.geteuid() != 0:
        pytest.skip("no external S3 store: Ceph's radosgw is not installed (scripts/test.sh installs it as root) and CLARY_TEST_S3_ENDPOINT is not set")
    ceph_dir = str(tmp_path_factory.mktemp("ceph"))
    port, mon = _free_port(), _free_port()
    env = dict(os.environ, CEPH_DIR=ceph_dir, RGW_PORT=str(port), MON_PORT=str(mon),
               OSD_PORTS="%d-%d" % (mon + 2, mon + 40), OSD_STORE="bluestore",
               S3_ACCESS_KEY="clary-test", S3_SECRET_KEY="clary-test-secret")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "ceph-rgw", "start.sh")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        yield Rgw("http://127.0.0.1:%d" % port, "clary-test", "clary-test-secret",
                  os.path.join(ceph_dir, "log", "client.rgw.a.log"))
    finally:
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "ceph-rgw", "stop.sh")], env=env)


def external_store_args(rgw, bucket_prefix):
    """`clary server` flags that keep its buckets in `rgw` under `bucket_prefix`. The key pair
    goes in the environment (`external_store_env`): a command line is visible to every user."""
    return ["--object-store", "s3://" + bucket_prefix, "--object-store-endpoint", rgw.endpoint]


def external_store_env(rgw):
    return {"AWS_ACCESS_KEY_ID": rgw.access_key, "AWS_SECRET_ACCESS_KEY": rgw.secret_key}


@pytest.fixture(scope="session")
def ext_server(rgw, tmp_path_factory):
    """A `clary server` whose buckets and objects live in the external store `rgw`: Clary's
    bucket `b` is the store's bucket `<bucket_prefix>b`."""
    prefix = "clary-%s-" % uuid.uuid4().hex[:8]
    s = Server(tmp_path_factory.mktemp("clary-ext"), extra_args=external_store_args(rgw, prefix),
               env=external_store_env(rgw)).start()
    s.bucket_prefix = prefix
    s.rgw = rgw
    yield s
    s.stop()


def pids_of(subcommand, under):
    """PIDs of `clary <subcommand>` processes whose command line names a path under `under`
    (a job's or an endpoint's directory): units the servers of a test started."""
    marker = under.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if subcommand in argv and any(a.startswith(marker) for a in argv):
            pids.append(int(entry))
    return pids


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def upload_code(s3, bucket, job, files):
    """Packs {name: text} as sourcedir.tar.gz the way the SDK does; returns its S3 URI."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    key = "%s/source/sourcedir.tar.gz" % job
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return "s3://%s/%s" % (bucket, key)


def job_request(job, bucket, source_uri, program="train.py", hps=None, channels=None, max_run=600, instance_type="ml.c5.xlarge"):
    hyper = {k: v for k, v in (hps or {}).items()}
    hyper.update({
        "sagemaker_program": '"%s"' % program,
        "sagemaker_submit_directory": '"%s"' % source_uri,
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"%s"' % job,
        "sagemaker_region": '"us-east-1"',
    })
    req = dict(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        OutputDataConfig={"S3OutputPath": "s3://%s/output" % bucket},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": max_run},
        HyperParameters=hyper,
    )
    if channels:
        req["InputDataConfig"] = [
            {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                                   "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in channels.items()]
    return req


def wait_for(sm, job, timeout=300, until=("Completed", "Failed", "Stopped")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=job)
        if d["TrainingJobStatus"] in until:
            return d
        time.sleep(0.3)
    raise AssertionError("job %s did not reach %s within %ss: %s" % (job, until, timeout, d))


def wait_secondary(sm, job, secondary, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=job)
        if d["SecondaryStatus"] == secondary:
            return d
        time.sleep(0.2)
    raise AssertionError("job %s never reached %s: %s" % (job, secondary, d))


def stream_texts(logs, job):
    """{host: text} of every log stream of a training job (streams are `<job>/<host>-<epoch>`)."""
    out = {}
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=job + "/")["logStreams"]
    for s in streams:
        lines, token = [], None
        while True:
            kw = dict(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)
            if token:
                kw["nextToken"] = token
            page = logs.get_log_events(**kw)
            if not page["events"]:
                break
            lines += [e["message"] for e in page["events"]]
            token = page["nextForwardToken"]
        host = s["logStreamName"].split("/", 1)[1].rsplit("-", 1)[0]
        out[host] = out[host] + "\n" + "\n".join(lines) if host in out else "\n".join(lines)
    return out


def tagged(text, tag):
    """The JSON a script printed after `TAG ` on a line of its log."""
    line = next(l for l in text.splitlines() if l.startswith(tag + " "))
    return json.loads(line[len(tag) + 1:])


def tagged_by_host(logs, job, tag):
    """{host: the JSON each host's script printed after `TAG `}."""
    return {host: tagged(text, tag) for host, text in stream_texts(logs, job).items()}


def log_text(logs, job):
    """Every line of a training job's log, stream after stream."""
    return "\n".join(stream_texts(logs, job).values())


INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def tar_gz(files):
    """{name: bytes or str} as tar.gz bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deploy(sm, s3, bucket, name, model_files, env=None, image=INFERENCE_IMAGE, count=1, variants=None):
    """Uploads model.tar.gz and creates model, endpoint config and endpoint named `name`."""
    key = "models/%s/model.tar.gz" % name
    s3.put_object(Bucket=bucket, Key=key, Body=tar_gz(model_files))
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": "s3://%s/%s" % (bucket, key), "Environment": env or {}})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants or [{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def wait_endpoint(sm, name, until=("InService", "Failed"), timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] in until:
            return d
        time.sleep(0.25)
    raise AssertionError("endpoint %s did not reach %s within %ss: %s" % (name, until, timeout, d))


def endpoint_log(logs, name):
    group = "/aws/sagemaker/Endpoints/" + name
    out = []
    for s in logs.describe_log_streams(logGroupName=group)["logStreams"]:
        page = logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"], startFromHead=True)
        out += [e["message"] for e in page["events"]]
    return "\n".join(out)
