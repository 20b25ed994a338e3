"""bench/control_plane: the control plane's read path, `DescribeTrainingJob` and
`ListTrainingJobs` (~50 rows), replayed by `wrk` at 64 connections against `clary server`.
Prints req/s, p50 and p99 for each operation and its ratio to the anchor; with `--before BIN`
the same measurement runs against a second binary (an older build) in the same run, and
after/before ratios are printed.

    python3 bench/control_plane/run.py [--seconds 10] [--connections 64] [--threads 2]
        [--jobs 50] [--rounds 1] [--before /path/to/old/clary]

The binary measured is CLARY_BIN, default $CARGO_TARGET_DIR/release/clary with
CARGO_TARGET_DIR=~/.cache/clary-target, built with `cargo build --release -p clary` when
missing. `wrk` is installed with apt when missing. boto3/botocore come from the interpreter,
or from ~/.cache/clary-test-venv (the script re-runs itself there when they are missing).

What is measured. Each binary gets its own `clary server --listen 127.0.0.1:0` on a fresh
data dir. The script creates a bucket, uploads a code tarball and creates `--jobs` training
jobs (a one-line script; they may complete or fail, whichever this machine's runtimes allow)
and waits for them to end, so no job activity runs during the measurement. Each request is
SigV4-signed once (botocore's SigV4Auth, Host 127.0.0.1:PORT) and checked once with urllib
(HTTP 200, the job's name, the row count); wrk then replays the identical bytes, which the
server accepts because SigV4 permits 15 minutes of clock skew and Clary keeps no nonce. Every
request still pays full verification: canonical request, HMAC chain, body hash. Describe asks
for the oldest job; List asks for MaxResults=100 and gets every job. Each measurement is
preceded by a 2 s warmup with the same script; the figures come from wrk's own histogram
(a Lua `done()` hook), errors (non-2xx, timeouts, socket errors) are counted and shown.

The anchor is `GET /_clary/health` on the same server, measured with the same wrk, the
same connection count and threads, in the same round: the same accept loop, TCP_NODELAY,
hyper HTTP/1.1 keep-alive connection and the entry of `clary_api::handle` up to its first
branch, with no body read, no SigV4, no spawn_blocking, no SQLite and no JSON. It is the
ceiling of Clary's HTTP stack on this machine with this client, so `vs anchor` is the share
of that ceiling each read operation reaches, and 1 - ratio is what SigV4 + JSON +
the blocking pool + SQLite + serialization cost. The anchor lives in the binary under test:
a refactor that changes the HTTP layer moves it too, which is why its after/before row is
printed next to the operations'. wrk, the server and the kernel share this machine's cores,
and the anchor pays the same sharing.

With `--rounds N` the binaries alternate (A B A B ...) while both servers stay up, because
this machine's speed drifts; medians over rounds are printed. Nothing is asserted. Only
loopback traffic; the servers are stopped by PID (SIGINT, then SIGKILL); every subprocess has
a timeout.
"""
import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
TEST_VENV_PY = os.path.join(CACHE, "clary-test-venv", "bin", "python")

try:
    import boto3  # noqa: F401
    import botocore  # noqa: F401
except ImportError:
    if os.path.exists(TEST_VENV_PY) and os.path.realpath(sys.executable) != os.path.realpath(TEST_VENV_PY):
        os.execv(TEST_VENV_PY, [TEST_VENV_PY] + sys.argv)
    sys.exit("bench/control_plane needs boto3 (pip install boto3, or the test venv %s)" % TEST_VENV_PY)

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, os.path.dirname(HERE))
from clary_server import ClaryServer  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "clary-target"))
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"
SCRIPT = "print('bench job')\n"

# wrk's Lua: the request, and a done() hook that prints wrk's own figures as one JSON line.
LUA_DONE = r'''
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "CLARY-BENCH {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p75_us\":%d,\"p90_us\":%d," ..
    "\"p99_us\":%d,\"mean_us\":%f,\"max_us\":%d,\"err_connect\":%d,\"err_read\":%d," ..
    "\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
'''


def lua_str(s):
    if "]==]" in s or "\n" in s:
        raise ValueError("cannot embed %r" % s)
    return "[==[" + s + "]==]"


def ensure_wrk():
    if shutil.which("wrk"):
        return shutil.which("wrk")
    print("Installing wrk (apt)...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        sys.exit("wrk is not installable here; install it (apt-get install wrk) and rerun")
    return shutil.which("wrk")


def ensure_binary():
    path = os.environ.get("CLARY_BIN", os.path.join(TARGET, "release", "clary"))
    if not os.path.exists(path):
        if "CLARY_BIN" in os.environ:
            sys.exit("CLARY_BIN=%s does not exist" % path)
        print("Building %s (cargo build --release -p clary)..." % path, flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "clary"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET), timeout=3600)
    return os.path.abspath(path)


def code_tarball():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("train.py")
        info.size = len(SCRIPT)
        info.mode = 0o755
        t.addfile(info, io.BytesIO(SCRIPT.encode()))
    return buf.getvalue()


def populate(server, n_jobs, timeout=300):
    """A bucket with the code object and `n_jobs` training jobs, all ended (or stopped) before
    returning. Returns the name of the oldest job and a line on their final statuses."""
    sm, s3 = server.client("sagemaker"), server.client("s3")
    bucket = "bench-control-plane"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=code_tarball())
    names = []
    for i in range(n_jobs):
        name = "bench-read-%03d" % i
        sm.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
            OutputDataConfig={"S3OutputPath": "s3://%s/output" % bucket},
            ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
            HyperParameters={"sagemaker_program": '"train.py"',
                             "sagemaker_submit_directory": '"s3://%s/code/sourcedir.tar.gz"' % bucket,
                             "sagemaker_region": '"us-east-1"', "epochs": "2", "learning-rate": "0.1"},
            Tags=[{"Key": "bench", "Value": "control-plane"}])
        names.append(name)
    ended = ("Completed", "Failed", "Stopped")
    deadline = time.time() + timeout
    statuses = {}
    while True:
        statuses = {}
        for page in sm.get_paginator("list_training_jobs").paginate(MaxResults=100):
            for j in page["TrainingJobSummaries"]:
                statuses[j["TrainingJobName"]] = j["TrainingJobStatus"]
        if all(statuses.get(n) in ended for n in names):
            break
        if time.time() > deadline:
            print("  %s: jobs still running after %d s; stopping them" % (server.label, timeout), flush=True)
            for n in names:
                if statuses.get(n) not in ended:
                    sm.stop_training_job(TrainingJobName=n)
            deadline = time.time() + 60
            timeout = 60
            continue
        time.sleep(0.5)
    counts = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    return names[0], ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()))


def signed(server, operation, body):
    """One SigV4-signed SageMaker JSON 1.1 request: (method, path, headers, body)."""
    creds = Credentials(server.keys["AWS_ACCESS_KEY_ID"], server.keys["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method="POST", url=server.url + "/", data=body.encode(), headers={
        "X-Amz-Target": "SageMaker." + operation,
        "Content-Type": "application/x-amz-json-1.1",
    })
    SigV4Auth(creds, "sagemaker", server.keys["AWS_DEFAULT_REGION"]).add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    headers["Host"] = "127.0.0.1:%d" % server.port  # what the signature covers, what wrk sends
    return "POST", "/", headers, body


def check(server, request, expect):
    """The signed request sent once with urllib: HTTP 200 and `expect(json)` true, or exit."""
    method, path, headers, body = request
    r = urllib.request.Request(server.url + path, data=body.encode() if body else None, method=method,
                               headers={k: v for k, v in headers.items() if k != "Host"})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit("%s: %s %s answered %d: %s" % (server.label, method, headers.get("X-Amz-Target", path),
                                                e.code, e.read()[:500]))
    if not expect(text):
        sys.exit("%s: unexpected answer to %s: %s" % (server.label, headers.get("X-Amz-Target", path), text[:500]))
    return len(text)


def lua_script(path, request):
    method, _, headers, body = request
    lines = ["wrk.method = %s" % lua_str(method)]
    if body:
        lines.append("wrk.body = %s" % lua_str(body))
    for k, v in headers.items():
        lines.append("wrk.headers[ %s ] = %s" % (lua_str(k), lua_str(v)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + LUA_DONE)


def run_wrk(wrk, url, script, seconds, a):
    args = [wrk, "-t%d" % a.threads, "-c%d" % a.connections, "-d%ds" % max(1, round(seconds)),
            "--timeout", "5s", "--latency", "-s", script, url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^CLARY-BENCH (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        sys.exit("wrk failed (rc %d):\n%s\n%s" % (out.returncode, out.stdout, out.stderr))
    r = json.loads(m.group(1))
    errors = sum(v for k, v in r.items() if k.startswith("err_"))
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1e3,
            "p99_ms": r["p99_us"] / 1e3, "errors": errors, "requests": r["requests"]}


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


OPS = ("anchor /_clary/health", "DescribeTrainingJob", "ListTrainingJobs")


def prepare(server, n_jobs, work):
    """Jobs in place, requests signed and checked, wrk scripts written: {op: (url, script)}."""
    t0 = time.time()
    oldest, statuses = populate(server, n_jobs)
    describe = signed(server, "DescribeTrainingJob", json.dumps({"TrainingJobName": oldest}))
    listing = signed(server, "ListTrainingJobs", json.dumps({"MaxResults": 100}))
    health = ("GET", "/_clary/health", {"Host": "127.0.0.1:%d" % server.port}, "")
    sizes = {
        OPS[0]: check(server, health, lambda t: t == "ok"),
        OPS[1]: check(server, describe, lambda t: json.loads(t).get("TrainingJobName") == oldest),
        OPS[2]: check(server, listing, lambda t: len(json.loads(t)["TrainingJobSummaries"]) == n_jobs),
    }
    scripts = {}
    for op, req in zip(OPS, (health, describe, listing)):
        path = os.path.join(work, "%s-%s.lua" % (server.label, op.split()[0]))
        lua_script(path, req)
        scripts[op] = (server.url + req[1], path)
    print("  %s: %s at %s; %d jobs (%s) in %.1f s; response bytes: %s" % (
        server.label, server.binary, server.url, n_jobs, statuses, time.time() - t0,
        ", ".join("%s %d" % (op.split()[0], n) for op, n in sizes.items())), flush=True)
    return scripts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="wrk duration per measurement (default 10)")
    ap.add_argument("--warmup", type=float, default=2, help="wrk warmup before each measurement (default 2)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--jobs", type=int, default=50, help="training jobs created; List returns all (<= 100)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are printed")
    ap.add_argument("--before", metavar="BIN", help="a second clary binary (an older build) measured in the same run")
    a = ap.parse_args()
    if not 1 <= a.jobs <= 100:
        sys.exit("--jobs must be 1..100 (one ListTrainingJobs page)")
    wrk = ensure_wrk()
    after_bin = ensure_binary()
    bins = [("after" if a.before else "clary", after_bin)]
    if a.before:
        if not os.path.exists(a.before):
            sys.exit("--before %s does not exist" % a.before)
        bins.append(("before", os.path.abspath(a.before)))
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    version = version.split(" Copyright")[0]
    print("control plane read path: wrk -t%d -c%d, %.0f s per measurement (+%.0f s warmup), %d round(s); %s; %d CPUs"
          % (a.threads, a.connections, a.seconds, a.warmup, a.rounds, version, os.cpu_count()), flush=True)
    load_start = loadavg()
    work = tempfile.mkdtemp(prefix="clary-bench-control-plane-")
    servers, scripts = [], {}
    results = {label: {op: [] for op in OPS} for label, _ in bins}
    try:
        for label, binary in bins:
            s = ClaryServer(binary, label)
            servers.append(s)
            scripts[label] = prepare(s, a.jobs, work)
        for r in range(a.rounds):
            order = bins if r % 2 == 0 else bins[::-1]
            for label, _ in order:
                for op in OPS:
                    url, script = scripts[label][op]
                    if a.warmup > 0:
                        run_wrk(wrk, url, script, a.warmup, a)
                    res = run_wrk(wrk, url, script, a.seconds, a)
                    results[label][op].append(res)
                    print("  round %d %-6s %-22s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (
                        r + 1, label, op, res["rps"], res["p50_ms"], res["p99_ms"], res["errors"]), flush=True)
    finally:
        for s in servers:
            s.stop()
        for s in servers:
            shutil.rmtree(s.work, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    def med(label, op, key):
        return statistics.median(x[key] for x in results[label][op])

    print()
    print("Medians over %d round(s) of %.0f s, %d connections, %d wrk threads, %d jobs; "
          "anchor = GET /_clary/health on the same server." % (a.rounds, a.seconds, a.connections, a.threads, a.jobs))
    print("1-minute load average %s before the run (other work sharing the %d CPUs), %s at its end "
          "(this run included)" % (load_start, os.cpu_count(), loadavg()))
    print("%-8s %-22s %10s %9s %9s %8s %11s" % ("binary", "op", "req/s", "p50 ms", "p99 ms", "errors", "vs anchor"))
    for label, _ in bins:
        anchor = med(label, OPS[0], "rps")
        for op in OPS:
            errors = sum(x["errors"] for x in results[label][op])
            print("%-8s %-22s %10.0f %9.2f %9.2f %8d %10.3fx" % (
                label, op, med(label, op, "rps"), med(label, op, "p50_ms"), med(label, op, "p99_ms"),
                errors, med(label, op, "rps") / anchor))
    if a.before:
        print()
        print("after/before (req/s: above 1 is faster; p50, p99: below 1 is faster)")
        print("%-22s %10s %9s %9s %16s" % ("op", "req/s", "p50", "p99", "vs anchor"))
        for op in OPS:
            va = med("after", op, "rps") / med("after", OPS[0], "rps")
            vb = med("before", op, "rps") / med("before", OPS[0], "rps")
            print("%-22s %9.3fx %8.3fx %8.3fx %7.3f / %.3f" % (
                op, med("after", op, "rps") / med("before", op, "rps"),
                med("after", op, "p50_ms") / med("before", op, "p50_ms"),
                med("after", op, "p99_ms") / med("before", op, "p99_ms"), va, vb))
    if any(x["errors"] for lab in results.values() for rs in lab.values() for x in rs):
        print("\nnote: some requests failed (non-2xx, timeouts or socket errors); their rows are suspect")


if __name__ == "__main__":
    main()
