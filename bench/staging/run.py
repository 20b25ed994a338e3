"""bench/staging: a File-mode channel staged from an external S3 store (Ceph's RADOS Gateway)
by a real training job, against the fastest S3 clients here copying the same prefix to a local
directory in the same run: `rclone copy` (Debian's) with its parallelism tuned, and
`aws s3 cp --recursive` with `max_concurrent_requests` tuned. Prints MB/s for each (median of
--runs) and the ratio Clary / the faster anchor. The issue's goal: at least as fast (ratio >= 1).

    python3 bench/staging/run.py [--mib 1024] [--objects 1000] [--runs 3]
        [--endpoint URL --access-key K --secret-key S] [--transfers 8,16,32] [--checkers 8,32]
        [--streams 2,4] [--aws-concurrency 10,32] [--osd-store bluestore|memstore]
        [--ceph-dir DIR] [--sweep-copies 2] [--skip-clary]

The binary is CLARY_BIN, default $CARGO_TARGET_DIR/release/clary with
CARGO_TARGET_DIR=~/.cache/clary-target, built with `cargo build --release -p clary` when missing.
boto3 comes from the interpreter, or from ~/.cache/clary-test-venv (the script re-runs itself
there when it is missing). rclone is installed with apt when missing; `aws` is --aws, else the
test venv's, else the one on PATH, else pip-installed into ~/.cache/clary-bench-awscli-venv.

The store. Without --endpoint (or CLARY_BENCH_S3_ENDPOINT and its _ACCESS_KEY/_SECRET_KEY), the
script starts a throw-away Ceph cluster with radosgw on loopback (scripts/ceph-rgw/start.sh,
OSD_STORE=bluestore, a sparse file on disk, or --osd-store memstore, the objects in the OSD's
RAM; ports chosen by the kernel, its state in the bench's temporary directory or --ceph-dir)
and stops it at the end by the PIDs that script recorded. `clary server` (fresh data dir,
loopback port) keeps its buckets there: `--object-store s3://<unique prefix>`, so Clary's bucket
`staging` is the store's bucket `<prefix>staging`; the store's key pair reaches the server in
its environment. The script writes straight into the store (boto3): that bucket, --mib MiB of
random bytes in --objects objects under `data/` (1000 objects of ~1 MiB by default, exactly
--mib MiB together) and the job's code; it then lists the prefix through Clary's S3 API as a
check and prints what it saw. Every contestant copies exactly those objects.

The anchors. Each copies `staging/data/` from the store to a fresh directory in the bench's
temporary directory, the filesystem the job's host directory is on (the server's data dir is
there too); `sync` runs before each copy (untimed) so no contestant pays for an earlier one's
writeback, and no contestant syncs its own writes. A copy is timed from the start of the
process to its exit, minus the tool's start-up: the median wall time of the same tool, same
settings, listing a prefix that holds nothing (process start, configuration, the client's setup
and one empty LIST, ~0.1 s for rclone, ~0.6 s for the Python aws CLI). What is left is listing
the prefix, every GET, and writing every byte to local disk. rclone runs with an on-the-fly
`:s3:` remote whose settings come from RCLONE_S3_* variables and `--config ""` (no config file
read or written); aws runs with a temporary AWS_CONFIG_FILE (path addressing,
max_concurrent_requests) and the keys in its environment, progress output off. Both run with
the bench's environment less its AWS_*/RCLONE_* variables (rclone refuses AWS_CA_BUNDLE on plain
HTTP). Tuning: after one untimed copy (the store's first reads of these objects), each rclone
setting of a sweep (--transfers x --checkers, default 8,16,32 x 8,32; then, greedily, the best
so far with --ignore-checksum, then the best so far with multi-thread downloads,
--multi-thread-streams 2 or 4 with a cutoff of half an object, which rclone otherwise never
uses for ~1 MiB objects) and each aws max_concurrent_requests (10, the default, and 32) copies
the prefix --sweep-copies times (2); the setting of each tool with the fastest copy is the one
its measured runs use. The sweep's own figures are printed but not used, so picking the best of
a sweep does not lend an anchor its luckiest run. For a store started here, the requests each
contestant made in the last run are counted from radosgw's access log and printed (ranged GETs
show as 206).

Clary. Each run creates a real training job (CreateTrainingJob, boto3, the MXNet 1.9 runtime)
with one File-mode S3Prefix channel `data` over s3://staging/data/ and a script that, first
thing, records time.time() and then walks its channel directory, counting files and bytes and
hashing every file (sha256 over each relative path and its bytes, in path order), and prints
them; the bench checks them against what it uploaded. The figure is the job's own
SecondaryStatusTransitions as DescribeTrainingJob reports them: from the start of
`Downloading` ("Downloading input data", reported by the host before it opens the store) to
the start of `Training` (reported right before the script is started). The server stamps each
transition when the host's report arrives, in microseconds, and the API returns them unrounded
(printed as a check). That window is what a SageMaker user sees as the download phase; it
holds listing the prefix, every GET and every write to local disk, like the anchors' figure,
and also what the host does around them (the job's directories and config files, the code
tarball, the runtime's check, the requirements step), which the anchors do not pay; the agent
process's own start is before it, as the anchors' start-up is subtracted. The host's log lines
inside that window (agent clock, ms) are printed for the last run, to show where it went; the
script's first instant minus the start of Downloading is printed as a second figure (it adds
the start of the user's Python).

CPU time, printed beside each figure to show who is bound by this machine's 2 cores: an
anchor's is its process's user + system time (getrusage of the reaped child) less its start-up's;
Clary's is the host's: what the server's reaped children used during the job (/proc's cutime +
cstime of the server, read after the agent is reaped), less what the script reports for itself
(its hashing), so it holds the agent's whole run (staging, the code, the artifact, its log
shipping). The store's own CPU (radosgw, the OSD) is in none of them.

Runs: --runs rounds, the order of the three contestants alternating (rclone, aws, clary, then
clary, aws, rclone, ...); medians over rounds, and the ratio within each round (the three ran in
the same minute or so) with its median, since this machine's speed drifts between rounds. MB/s
is 10^6 bytes per second. This machine's cores are shared with other work: read the load average
printed at the start and the end. Nothing is asserted. Only loopback traffic; the server and the
Ceph daemons are stopped by PID, every subprocess has a timeout, the temporary directories (the
bench's, the server's, each copy as soon as it is counted, each job's host directory as soon as
it ends) are removed.
"""
import argparse
import hashlib
import io
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
TEST_VENV = os.path.join(CACHE, "clary-test-venv")
TEST_VENV_PY = os.path.join(TEST_VENV, "bin", "python")
AWSCLI_VENV = os.path.join(CACHE, "clary-bench-awscli-venv")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "clary-target"))

try:
    import boto3  # noqa: F401
except ImportError:
    if os.path.exists(TEST_VENV_PY) and os.path.realpath(sys.executable) != os.path.realpath(TEST_VENV_PY):
        os.execv(TEST_VENV_PY, [TEST_VENV_PY] + sys.argv)
    sys.exit("bench/staging needs boto3 (pip install boto3, or the test venv %s)" % TEST_VENV_PY)
from botocore.config import Config

sys.path.insert(0, os.path.dirname(HERE))
from clary_server import ClaryServer  # noqa: E402

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "staging"          # Clary's bucket; the store's is <prefix>staging
PREFIX = "data/"            # the channel's prefix inside it
CHANNEL = "data"

# The job's script: its first instant, then what it finds in its channel.
SCRIPT = r'''
import hashlib, os, time
t0 = time.time()
root = os.environ.get("SM_CHANNEL_DATA") or os.path.join(os.environ["SM_INPUT_DIR"], "data", "data")
paths = []
for d, _, files in os.walk(root):
    for f in files:
        paths.append(os.path.relpath(os.path.join(d, f), root))
h, n = hashlib.sha256(), 0
for rel in sorted(paths):
    h.update(rel.encode() + b"\0")
    with open(os.path.join(root, rel), "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += len(b)
            h.update(b)
t = os.times()
print("STAGING-BENCH start=%.6f files=%d bytes=%d sha256=%s cpu=%.3f" % (
    t0, len(paths), n, h.hexdigest(), t.user + t.system), flush=True)
'''


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_binary():
    path = os.environ.get("CLARY_BIN", os.path.join(TARGET, "release", "clary"))
    if not os.path.exists(path):
        if "CLARY_BIN" in os.environ:
            sys.exit("CLARY_BIN=%s does not exist" % path)
        print("Building %s (cargo build --release -p clary)..." % path, flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "clary"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET), timeout=3600)
    return path


def ensure_rclone():
    if not shutil.which("rclone"):
        print("Installing rclone (apt)...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "rclone"], check=True, timeout=600,
                       stdout=subprocess.DEVNULL)
    if not shutil.which("rclone"):
        sys.exit("rclone is not installable here; install it (apt-get install rclone) and rerun")
    return shutil.which("rclone")


def ensure_aws(given):
    """The aws CLI to run: given, the test venv's, PATH's (through pyenv's shim to the real
    script, so the shim's start-up is not counted), or one pip installs for this bench."""
    if given:
        return given
    for cand in (os.path.join(TEST_VENV, "bin", "aws"), os.path.join(AWSCLI_VENV, "bin", "aws")):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("aws")
    if found and "/shims/" in found and shutil.which("pyenv"):
        real = subprocess.run(["pyenv", "which", "aws"], capture_output=True, text=True, timeout=30)
        if real.returncode == 0 and real.stdout.strip():
            return real.stdout.strip()
    if found:
        return found
    print("Installing the aws CLI into %s (pip)..." % AWSCLI_VENV, flush=True)
    subprocess.run([sys.executable, "-m", "venv", AWSCLI_VENV], check=True, timeout=300)
    subprocess.run([os.path.join(AWSCLI_VENV, "bin", "pip"), "install", "-q", "awscli"], check=True,
                   timeout=900)
    return os.path.join(AWSCLI_VENV, "bin", "aws")


class Store:
    """The external S3 store: given, or a Ceph RGW started here (stopped by `stop`)."""

    def __init__(self, a, work):
        self.ceph_env = None
        if a.endpoint:
            self.endpoint, self.access_key, self.secret_key = a.endpoint, a.access_key, a.secret_key
            if not (self.access_key and self.secret_key):
                sys.exit("--endpoint needs --access-key and --secret-key")
            return
        if not shutil.which("radosgw"):
            sys.exit("no store: give --endpoint, or install Ceph (apt-get install -y "
                     "--no-install-recommends radosgw ceph-mon ceph-osd)")
        port, mon = free_port(), free_port()
        self.access_key, self.secret_key = "bench-staging", "bench-staging-secret"
        self.ceph_dir = tempfile.mkdtemp(prefix="ceph-", dir=a.ceph_dir or work)
        self.ceph_env = dict(os.environ, CEPH_DIR=self.ceph_dir, RGW_PORT=str(port),
                             MON_PORT=str(mon), OSD_PORTS="%d-%d" % (mon + 2, mon + 40),
                             OSD_STORE=a.osd_store, S3_ACCESS_KEY=self.access_key,
                             S3_SECRET_KEY=self.secret_key)
        t = time.time()
        started = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ceph-rgw", "start.sh")],
                                 env=self.ceph_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, timeout=300)
        if started.returncode != 0:
            logs = ""
            for name in ("mon.a.log", "osd.0.log", "client.rgw.a.log"):
                path = os.path.join(self.ceph_dir, "log", name)
                if os.path.exists(path):
                    logs += "\n--- %s (tail)\n%s" % (name, "".join(open(path, errors="replace").readlines()[-5:]))
            self.ceph_env = None    # start.sh stopped what it had started
            raise RuntimeError("Ceph RGW did not start:\n%s%s" % (started.stderr[-2000:], logs))
        self.endpoint = "http://127.0.0.1:%d" % port
        print("Ceph RGW (%s) up at %s in %.0f s" % (a.osd_store, self.endpoint, time.time() - t), flush=True)

    def log_size(self):
        """Where radosgw's log ends now (None for a store not started here)."""
        if not self.ceph_env:
            return None
        path = os.path.join(self.ceph_dir, "log", "client.rgw.a.log")
        return os.path.getsize(path) if os.path.exists(path) else 0

    def requests_since(self, offset):
        """The requests radosgw served since `offset` by kind: its `beast:` access lines
        (debug_rgw = 1), e.g. {"GET 200": 1000, "LIST": 1}."""
        counts = {}
        if offset is None:
            return counts
        with open(os.path.join(self.ceph_dir, "log", "client.rgw.a.log"), "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if " beast: " not in line or '"' not in line:
                continue
            try:
                request, rest = line.split('"', 2)[1:]
                method, target = request.split()[:2]
                status = rest.split()[0]
            except ValueError:
                continue
            path, _, query = target.partition("?")
            if method == "GET" and path.count("/") == 1 and ("prefix=" in query or "list-type" in query):
                kind = "LIST"
            else:
                kind = "%s %s" % (method, status)
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def client(self, pool=16):
        import boto3
        cfg = Config(s3={"addressing_style": "path"}, max_pool_connections=pool, retries={"max_attempts": 3})
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1", config=cfg)

    def remove_buckets(self, prefix):
        """Deletes the buckets named `prefix...` and their objects (a store that outlives us)."""
        s3 = self.client()
        for b in s3.list_buckets().get("Buckets", []):
            if not b["Name"].startswith(prefix):
                continue
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=b["Name"], Delete={"Objects": keys, "Quiet": True})
            s3.delete_bucket(Bucket=b["Name"])

    def stop(self):
        if self.ceph_env:
            subprocess.run(["bash", os.path.join(ROOT, "scripts", "ceph-rgw", "stop.sh")], env=self.ceph_env,
                           timeout=120, stdout=subprocess.DEVNULL)
        if getattr(self, "ceph_dir", None):
            shutil.rmtree(self.ceph_dir, ignore_errors=True)


def upload(store, store_bucket, mib, n_objects):
    """`n_objects` objects of random bytes, `mib` MiB together, under PREFIX; returns the
    total bytes and the sha256 the job's script computes over them (relative paths in order)."""
    total = mib << 20
    base, extra = divmod(total, n_objects)
    sizes = [base + (1 if i < extra else 0) for i in range(n_objects)]
    rels = ["part-%05d" % i for i in range(n_objects)]
    s3 = store.client(pool=16)
    digest = hashlib.sha256()
    bodies = {}

    def put(i):
        s3.put_object(Bucket=store_bucket, Key=PREFIX + rels[i], Body=bodies.pop(i))

    t = time.time()
    with ThreadPoolExecutor(8) as ex:
        futures = []
        for i in range(n_objects):
            body = os.urandom(sizes[i])
            digest.update(rels[i].encode() + b"\0")
            digest.update(body)
            bodies[i] = body
            futures.append(ex.submit(put, i))
            if len(futures) >= 64:      # bounded memory: wait for the oldest
                futures.pop(0).result()
        for f in futures:
            f.result()
    print("uploaded %d objects, %d bytes, straight to the store in %.1f s" % (
        n_objects, total, time.time() - t), flush=True)
    return total, digest.hexdigest()


def count_dir(path):
    n = b = 0
    for d, _, files in os.walk(path):
        for f in files:
            n += 1
            b += os.path.getsize(os.path.join(d, f))
    return n, b


def tool_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(extra)
    return env


class Rclone:
    name = "rclone"

    def __init__(self, binary, store, store_bucket):
        self.binary, self.bucket = binary, store_bucket
        self.env = tool_env({
            "RCLONE_S3_PROVIDER": "Ceph", "RCLONE_S3_ENDPOINT": store.endpoint,
            "RCLONE_S3_ACCESS_KEY_ID": store.access_key, "RCLONE_S3_SECRET_ACCESS_KEY": store.secret_key,
            "RCLONE_S3_ENV_AUTH": "false", "RCLONE_S3_REGION": "us-east-1"})

    def cmd(self, settings, dest, prefix=PREFIX):
        return [self.binary, "copy", "--config", "", ":s3:%s/%s" % (self.bucket, prefix.rstrip("/")), dest,
                *settings]

    def startup_cmd(self, settings, dest):
        return [self.binary, "lsf", "--config", "", ":s3:%s/no-such-prefix-%s" % (self.bucket, uuid.uuid4().hex)]

    def describe(self, settings):
        return " ".join(settings)


class Aws:
    name = "aws s3 cp"

    def __init__(self, binary, store, store_bucket, work):
        self.binary, self.bucket, self.store, self.work = binary, store_bucket, store, work

    def env_for(self, concurrency):
        path = os.path.join(self.work, "aws-config-%d" % concurrency)
        with open(path, "w") as f:
            f.write("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n"
                    "  max_concurrent_requests = %d\n" % concurrency)
        return tool_env({"AWS_CONFIG_FILE": path, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                         "AWS_ACCESS_KEY_ID": self.store.access_key,
                         "AWS_SECRET_ACCESS_KEY": self.store.secret_key, "AWS_DEFAULT_REGION": "us-east-1"})

    def cmd(self, concurrency, dest):
        return [self.binary, "s3", "cp", "--recursive", "--only-show-errors", "--no-progress",
                "--endpoint-url", self.store.endpoint, "s3://%s/%s" % (self.bucket, PREFIX), dest]

    def startup_cmd(self, concurrency, dest):
        return [self.binary, "s3", "ls", "--endpoint-url", self.store.endpoint,
                "s3://%s/no-such-prefix-%s/" % (self.bucket, uuid.uuid4().hex)]

    def describe(self, concurrency):
        return "max_concurrent_requests=%d" % concurrency


def tool_env_of(tool, setting):
    return tool.env_for(setting) if isinstance(tool, Aws) else tool.env


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env, check=True, timeout=900):
    """Runs `cmd`; its wall time and its CPU time (user + system, with its children's)."""
    c, t = children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    secs, cpu = time.perf_counter() - t, children_cpu() - c
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), p.returncode, (p.stderr or p.stdout)[-2000:]))
    return secs, cpu


def startup(tool, setting, work, repeats=3):
    """The tool listing an empty prefix (its start-up and one empty LIST): the median wall
    time and the median CPU time."""
    env = tool_env_of(tool, setting)
    runs = [timed(tool.startup_cmd(setting, work), env, check=False) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def copy_once(tool, setting, work, expect_files, expect_bytes, start):
    """One copy into a fresh directory: its wall and CPU seconds less the tool's start-up's."""
    dest = tempfile.mkdtemp(prefix="anchor-", dir=work)
    try:
        subprocess.run(["sync"], timeout=300)
        secs, cpu = timed(tool.cmd(setting, dest), tool_env_of(tool, setting))
        n, b = count_dir(dest)
        if (n, b) != (expect_files, expect_bytes):
            raise RuntimeError("%s %s copied %d files, %d bytes; expected %d, %d" % (
                tool.name, tool.describe(setting), n, b, expect_files, expect_bytes))
        return max(secs - start[0], 1e-6), max(cpu - start[1], 0.0)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def code_tarball():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("count.py")
        info.size = len(SCRIPT)
        t.addfile(info, io.BytesIO(SCRIPT.encode()))
    return buf.getvalue()


def job_lines(logs, job):
    out = []
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=job + "/")["logStreams"]
    for s in streams:
        kw = {}
        while True:
            r = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"],
                                    startFromHead=True, **kw)
            out.extend(r["events"])
            if not r["events"] or r.get("nextForwardToken") in (None, kw.get("nextToken")):
                break
            kw = {"nextToken": r["nextForwardToken"]}
    return sorted(out, key=lambda e: e["timestamp"])


def reaped_cpu(pid):
    """CPU seconds (user + system) of the children `pid` has reaped (/proc's cutime, cstime)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def clary_job(server, sm, logs, i, expect_files, expect_bytes, expect_sha):
    """One training job; returns (Downloading->Training secs, script start - Downloading secs,
    the host's CPU secs less its script's, the transitions, the job's log events)."""
    job = "bench-staging-%s-%d" % (uuid.uuid4().hex[:8], i)
    subprocess.run(["sync"], timeout=300)
    cpu_before = reaped_cpu(server.proc.pid)
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://%s/out" % BUCKET},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 900},
        InputDataConfig=[{"ChannelName": CHANNEL, "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://%s/%s" % (BUCKET, PREFIX),
            "S3DataDistributionType": "FullyReplicated"}}}],
        HyperParameters={"sagemaker_program": '"count.py"',
                         "sagemaker_submit_directory": '"s3://%s/code/sourcedir.tar.gz"' % BUCKET})
    deadline = time.time() + 1200
    while True:
        desc = sm.describe_training_job(TrainingJobName=job)
        if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") or time.time() > deadline:
            break
        time.sleep(0.2)
    # The host's agent has reported; wait for the server to reap it (its CPU time is then in
    # the server's children's), at most a few seconds.
    cpu_after, settle = reaped_cpu(server.proc.pid), time.time() + 5
    while time.time() < settle:
        time.sleep(0.3)
        now = reaped_cpu(server.proc.pid)
        if now == cpu_after and now > cpu_before:
            break
        cpu_after = now
    events = job_lines(logs, job)
    shutil.rmtree(os.path.join(server.data_dir, "jobs", job), ignore_errors=True)
    if desc["TrainingJobStatus"] != "Completed":
        tail = "\n".join(e["message"] for e in events[-30:])
        raise RuntimeError("job %s ended %s: %s\n%s" % (job, desc["TrainingJobStatus"], desc.get("FailureReason"), tail))
    trans = {t["Status"]: t for t in desc["SecondaryStatusTransitions"]}
    t_down, t_train = trans["Downloading"]["StartTime"], trans["Training"]["StartTime"]
    line = next((e["message"] for e in events if e["message"].startswith("STAGING-BENCH ")), None)
    if line is None:
        raise RuntimeError("job %s printed no STAGING-BENCH line" % job)
    got = dict(kv.split("=", 1) for kv in line.split()[1:])
    if (int(got["files"]), int(got["bytes"]), got["sha256"]) != (expect_files, expect_bytes, expect_sha):
        raise RuntimeError("job %s staged %s files, %s bytes, sha256 %s; expected %d, %d, %s" % (
            job, got["files"], got["bytes"], got["sha256"], expect_files, expect_bytes, expect_sha))
    staged = (t_train - t_down).total_seconds()
    cpu = max(cpu_after - cpu_before - float(got["cpu"]), 0.0)
    script = float(got["start"]) - t_down.timestamp()
    return staged, script, cpu, desc["SecondaryStatusTransitions"], events


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--endpoint", default=os.environ.get("CLARY_BENCH_S3_ENDPOINT"),
                   help="an S3 store to use instead of starting a Ceph RGW")
    p.add_argument("--access-key", default=os.environ.get("CLARY_BENCH_S3_ACCESS_KEY"))
    p.add_argument("--secret-key", default=os.environ.get("CLARY_BENCH_S3_SECRET_KEY"))
    p.add_argument("--osd-store", default="bluestore", choices=["bluestore", "memstore"],
                   help="the started Ceph OSD's object store: a sparse file on disk, or RAM")
    p.add_argument("--ceph-dir", help="where the started Ceph keeps its state [the bench's temporary "
                   "directory]; e.g. /dev/shm with --osd-store memstore when the disk is nearly full "
                   "(Ceph's monitor refuses to start with under 1%% of its filesystem free)")
    p.add_argument("--transfers", default="8,16,32", help="rclone --transfers to sweep")
    p.add_argument("--checkers", default="8,32", help="rclone --checkers to sweep")
    p.add_argument("--streams", default="2,4", help="rclone --multi-thread-streams to try")
    p.add_argument("--aws-concurrency", default="10,32", help="aws max_concurrent_requests to sweep")
    p.add_argument("--sweep-copies", type=int, default=2, help="copies per setting in the tuning sweep")
    p.add_argument("--aws", help="the aws CLI to run")
    p.add_argument("--skip-clary", action="store_true", help="anchors only")
    a = p.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    binary = None if a.skip_clary else ensure_binary()
    rclone_bin, aws_bin = ensure_rclone(), ensure_aws(a.aws)
    rclone_version = subprocess.run([rclone_bin, "version"], capture_output=True, text=True,
                                    timeout=60).stdout.splitlines()[0]
    aws_version = subprocess.run([aws_bin, "--version"], capture_output=True, text=True, timeout=60,
                                 env=tool_env({}))
    aws_version = (aws_version.stdout or aws_version.stderr).strip()
    # On disk at once: the store's copy (bluestore), one contestant's copy, and some slack.
    need = ((a.mib << 20) * (2 if not a.endpoint and a.osd_store == "bluestore" and not a.ceph_dir else 1)) + (1 << 30)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < need:
        sys.exit("%s has %.1f GiB free; this run needs about %.1f GiB (a smaller --mib, or --osd-store memstore "
                 "to keep the store's copy in RAM)" % (tempfile.gettempdir(), free / 2**30, need / 2**30))
    load_start = loadavg()
    work = tempfile.mkdtemp(prefix="clary-bench-staging-run-")
    store = server = None
    bucket_prefix = "clary-bench-%s-" % uuid.uuid4().hex[:8]
    try:
        store = Store(a, work)
        store_bucket = bucket_prefix + BUCKET
        # Everything is written straight to the store: the bucket, the data, the code.
        store.client().create_bucket(Bucket=store_bucket)
        total, sha = upload(store, store_bucket, a.mib, a.objects)
        store.client().put_object(Bucket=store_bucket, Key="code/sourcedir.tar.gz", Body=code_tarball())
        if binary:
            # The store's key pair in the server's environment, not on its command line.
            server = ClaryServer(binary, "staging", extra_args=[
                "--object-store", "s3://" + bucket_prefix, "--object-store-endpoint", store.endpoint],
                env=dict(os.environ, CLARY_OBJECT_STORE_ACCESS_KEY=store.access_key,
                         CLARY_OBJECT_STORE_SECRET_KEY=store.secret_key))
            # The server's data dir (and so the job's host directory) is on the anchors' filesystem.
            s3c, sm, logs = server.client("s3"), server.client("sagemaker"), server.client("logs")
            try:
                seen = [o for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
                        for o in page.get("Contents", [])]
                print("Clary's S3 API lists %d objects, %d bytes under s3://%s/%s" % (
                    len(seen), sum(o["Size"] for o in seen), BUCKET, PREFIX), flush=True)
            except Exception as e:  # noqa: BLE001
                print("Clary's S3 API could not list s3://%s/%s (%s); the job lists it itself" % (
                    BUCKET, PREFIX, e), flush=True)

        rclone = Rclone(rclone_bin, store, store_bucket)
        aws = Aws(aws_bin, store, store_bucket, work)

        # One untimed copy first, so that the sweep's first setting does not pay for a store
        # that has not served these objects yet.
        copy_once(rclone, [], work, a.objects, total, (0.0, 0.0))
        # Tuning sweep: each setting copies --sweep-copies times; the fastest copy of each tool
        # picks the setting used below.
        print("\ntuning sweep (best of %d copies each; seconds after start-up, MB/s)" % a.sweep_copies, flush=True)
        sweep = [["--transfers", str(t), "--checkers", str(c)] for t in ints(a.transfers) for c in ints(a.checkers)]
        best = {}

        def try_settings(tool, settings):
            for s in settings:
                st = startup(tool, s, work)
                secs = min(copy_once(tool, s, work, a.objects, total, st)[0] for _ in range(a.sweep_copies))
                print("  %-10s %-70s %6.2f s %6.0f MB/s  (start-up %.2f s)" % (
                    tool.name, tool.describe(s), secs, total / secs / 1e6, st[0]), flush=True)
                if tool.name not in best or secs < best[tool.name][1]:
                    best[tool.name] = (s, secs)

        try_settings(rclone, sweep)
        # Then, greedily, each extra on top of the best so far: no MD5 check after each copy;
        # multi-thread downloads (ranged GETs) with a cutoff under the objects' size.
        cutoff = "%dk" % max((total // a.objects) // 2048, 1)     # KiB: rclone reads a bare number as KiB
        for group in ([["--ignore-checksum"]],
                      [["--multi-thread-streams", str(n), "--multi-thread-cutoff", cutoff] for n in ints(a.streams)]):
            top = best["rclone"][0]
            try_settings(rclone, [top + extra for extra in group])
        try_settings(aws, ints(a.aws_concurrency))
        settings = {"rclone": best["rclone"][0], "aws s3 cp": best["aws s3 cp"][0]}
        print("chosen: rclone %s; aws %s" % (rclone.describe(settings["rclone"]), aws.describe(settings["aws s3 cp"])),
              flush=True)
        starts = {t.name: startup(t, settings[t.name], work, repeats=5) for t in (rclone, aws)}

        results = {"rclone": [], "aws s3 cp": [], "clary": [], "clary script": []}
        requests = {}
        cpus = {"rclone": [], "aws s3 cp": [], "clary": []}
        last = None
        print("\nmeasured runs", flush=True)
        for i in range(a.runs):
            order = ["rclone", "aws s3 cp", "clary"]
            if i % 2:
                order.reverse()
            for who in order:
                log_at = store.log_size()
                if who == "clary":
                    if not server:
                        continue
                    staged, script, cpu, trans, events = clary_job(server, sm, logs, i, a.objects, total, sha)
                    results["clary"].append(staged)
                    results["clary script"].append(script)
                    cpus["clary"].append(cpu)
                    last = (trans, events)
                    print("  run %d  clary      %6.2f s %6.0f MB/s  (CPU %.2f s; script started %.2f s after "
                          "Downloading)" % (i + 1, staged, total / staged / 1e6, cpu, script), flush=True)
                else:
                    tool = rclone if who == "rclone" else aws
                    secs, cpu = copy_once(tool, settings[who], work, a.objects, total, starts[who])
                    results[who].append(secs)
                    cpus[who].append(cpu)
                    print("  run %d  %-10s %6.2f s %6.0f MB/s  (CPU %.2f s)" % (
                        i + 1, who, secs, total / secs / 1e6, cpu), flush=True)
                requests[who if who != "clary" else "clary (whole job)"] = store.requests_since(log_at)

        if last:
            trans, events = last
            t0 = next(t["StartTime"] for t in trans if t["Status"] == "Downloading")
            print("\nthe last job's transitions and host log inside Downloading (seconds from its start):")
            for t in trans:
                print("  %+8.3f  %-12s %s" % ((t["StartTime"] - t0).total_seconds(), t["Status"],
                                             t["StartTime"].isoformat(timespec="microseconds")))
            t_train = next(t["StartTime"] for t in trans if t["Status"] == "Training")
            for e in events:
                at = e["timestamp"] / 1000.0 - t0.timestamp()
                if -0.5 <= at <= (t_train - t0).total_seconds() + 0.5:
                    print("  %+8.3f  %s" % (at, e["message"][:200]))
                if "Invoking user script" in e["message"]:
                    break

        print("\nchannel            %d MiB (%d bytes) in %d objects, %d runs, order alternating" % (
            a.mib, total, a.objects, a.runs))
        print("store              %s (%s)" % (store.endpoint, "Ceph RGW started here" if store.ceph_env else "given"))
        print("rclone             %s, %s (start-up %.2f s, CPU %.2f s, subtracted)" % (
            rclone_version, rclone.describe(settings["rclone"]), *starts["rclone"]))
        print("aws                %s, %s (start-up %.2f s, CPU %.2f s, subtracted)" % (
            aws_version, aws.describe(settings["aws s3 cp"]), *starts["aws s3 cp"]))
        med = {k: statistics.median(v) for k, v in results.items() if v}
        for k in ("rclone", "aws s3 cp", "clary"):
            if k in med:
                print("%-18s median %6.2f s %7.0f MB/s  (best %.0f)  CPU %.2f s" % (
                    k, med[k], total / med[k] / 1e6, total / min(results[k]) / 1e6, statistics.median(cpus[k])))
        anchor = min(("rclone", "aws s3 cp"), key=lambda k: med[k])
        if "clary" in med:
            print("%-18s median %6.2f s %7.0f MB/s" % ("clary to script", med["clary script"],
                                                      total / med["clary script"] / 1e6))
            print("ratio clary / %-9s %.2f  (goal >= 1.00)" % (anchor, med[anchor] / med["clary"]))
            # The machine's speed drifts between rounds; within a round the three ran minutes apart.
            per_round = [x / c for x, c in zip(results[anchor], results["clary"])]
            print("  per round        %s, median %.2f" % (
                " ".join("%.2f" % r for r in per_round), statistics.median(per_round)))
        if any(requests.values()):
            print("requests to the store in the last run (radosgw's access log; GET 206 = a ranged GET):")
            for who, counts in requests.items():
                print("  %-16s %s" % (who, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
        print("load average %s at the start, %s at the end (%d cores, shared)" % (load_start, loadavg(), os.cpu_count()))
    finally:
        if server:
            server.stop()
            shutil.rmtree(server.work, ignore_errors=True)
        if store:
            if not store.ceph_env:
                try:
                    store.remove_buckets(bucket_prefix)
                except Exception as e:  # noqa: BLE001
                    print("could not remove the bench's buckets %s*: %s" % (bucket_prefix, e))
            store.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
