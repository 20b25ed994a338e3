"""bench/serving: the same MXNet models, worker count and load against Multi Model Server 1.1.11
with AWS's sagemaker-mxnet-inference handler (the stack behind SageMaker's MXNet endpoints),
`clary model-server` directly, and Clary's InvokeEndpoint router, all in one run. Prints
req/s, p50 and p99 at concurrency 1, 8 and 64, the model's in-process predict time, and ratios.

    python bench/serving/run.py [--seconds 10] [--rounds 2] [--models mlp,cnn] [--before BIN]

Needs: a built `clary` and `clary-loadgen` (CLARY_BIN / CLARY_LOADGEN, default
~/.cache/clary-target/release), the mxnet-1.9 runtime, and Java for MMS (installed with apt if
missing). MMS and its handler are installed from PyPI into ~/.cache/clary-bench/mms-venv.
`--before BIN` also measures a second clary binary (an older build) the same way in the same
run (`clary@before`, `endpoint@before`; the two binaries swap places every other round; the
same clary-loadgen drives both) and prints after/before ratios.
Servers alternate (A B A B) because this machine's speed drifts; medians are reported.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "clary-target"))
CLARY = os.environ.get("CLARY_BIN", os.path.join(TARGET, "release", "clary"))
LOADGEN = os.environ.get("CLARY_LOADGEN", os.path.join(TARGET, "release", "clary-loadgen"))
RUNTIMES = os.environ.get("CLARY_RUNTIMES_DIR", os.path.join(CACHE, "clary", "runtimes"))
RUNTIME_PY = os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python")
MMS_VENV = os.path.join(CACHE, "clary-bench", "mms-venv")
MMS_PACKAGES = ["multi-model-server==1.1.11", "sagemaker-mxnet-inference==1.5.5",
                "sagemaker-inference==1.6.1", "mxnet==1.9.1", "numpy<1.24"]
WORKERS = 2
CONCURRENCY = (1, 8, 64)

MAKE_MODELS = r'''
import json, os, sys
import mxnet as mx
from mxnet import gluon
out, kind = sys.argv[1], sys.argv[2]
mx.random.seed(0)
net = gluon.nn.HybridSequential()
if kind == "mlp":
    net.add(gluon.nn.Dense(256, activation="relu"), gluon.nn.Dense(128, activation="relu"), gluon.nn.Dense(10))
    shape = [1, 784]
else:
    net.add(gluon.nn.Conv2D(20, 5, activation="relu"), gluon.nn.MaxPool2D(2, 2),
            gluon.nn.Conv2D(50, 5, activation="relu"), gluon.nn.MaxPool2D(2, 2),
            gluon.nn.Flatten(), gluon.nn.Dense(500, activation="relu"), gluon.nn.Dense(10))
    shape = [1, 1, 28, 28]
net.initialize(mx.init.Xavier())
net.hybridize()
net(mx.nd.zeros(shape))
os.makedirs(os.path.join(out, "code"), exist_ok=True)
net.export(os.path.join(out, "model"), epoch=0)
json.dump([{"name": "data", "shape": shape}], open(os.path.join(out, "model-shapes.json"), "w"))
open(os.path.join(out, "code", "inference.py"), "w").write("# default handlers\n")
'''

IN_PROCESS = r'''
import json, sys, time
import numpy as np
import mxnet as mx
sys.path.insert(0, sys.argv[3])
from clary_serving import mxnet_defaults
body = open(sys.argv[2]).read()
mod = mxnet_defaults.default_model_fn(sys.argv[1])
runner = mxnet_defaults.ModuleRunner(mod)
x = runner.rows(np.array(json.loads(body)))
for _ in range(200):
    runner.forward(x).asnumpy()
n, t = 2000, time.perf_counter()
for _ in range(n):
    runner.forward(x).asnumpy()
fwd = (time.perf_counter() - t) / n * 1e3
# The toolkit's own per-request path: JSON decode, NDArrayIter, Module.predict, JSON encode.
it = lambda: mx.io.NDArrayIter(mx.nd.array(np.array(json.loads(body))), batch_size=1)
for _ in range(50):
    json.dumps(mod.predict(it()).asnumpy().tolist())
t = time.perf_counter()
for _ in range(500):
    json.dumps(mod.predict(it()).asnumpy().tolist())
toolkit = (time.perf_counter() - t) / 500 * 1e3
print(json.dumps({"forward_ms": fwd, "toolkit_path_ms": toolkit}))
'''


def free_port(below=None):
    """A free loopback port; MMS 1.1.11 rejects ports above 32767 ("Invalid port number")."""
    import random
    for _ in range(200):
        port = random.randint(20000, 32000) if below else 0
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def wait_ping(port, timeout=120, predict_body=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predict_body is None:
                with urllib.request.urlopen("http://127.0.0.1:%d/ping" % port, timeout=2) as r:
                    if r.status == 200:
                        return
            else:
                req = urllib.request.Request("http://127.0.0.1:%d/invocations" % port, data=predict_body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server on port %d did not become ready" % port)


def ensure_mms():
    if shutil.which("java") is None:
        print("Installing a Java runtime for MMS (apt)...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "default-jre-headless"], check=True)
    py = os.path.join(MMS_VENV, "bin", "python")
    stamp = os.path.join(MMS_VENV, ".installed")
    if not os.path.exists(stamp) or open(stamp).read() != " ".join(MMS_PACKAGES):
        subprocess.run([sys.executable, "-m", "venv", MMS_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *MMS_PACKAGES], check=True)
        open(stamp, "w").write(" ".join(MMS_PACKAGES))
    return py


class Proc:
    """A server this benchmark started; ended by PID (and its process group)."""

    def __init__(self, args, env, log, cwd=None):
        self.p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_mms(py, model_dir, work):
    """As the container's `serve` does: serving.main() writes the MMS config and starts MMS."""
    port = free_port(below=32768)
    base = os.path.join(work, "mms-base-%d" % port)
    os.makedirs(base)
    shutil.copytree(model_dir, os.path.join(base, "model"))
    # The container has MMS's tools (model-archiver, multi-model-server) on PATH.
    path = os.path.dirname(py) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, PATH=path, SAGEMAKER_BASE_DIR=base, SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS),
               SAGEMAKER_BIND_TO_PORT=str(port),
               MMS_INFERENCE_ADDRESS="http://127.0.0.1:%d" % port, MMS_MANAGEMENT_ADDRESS="http://127.0.0.1:%d" % port,
               )
    code = "from sagemaker_mxnet_serving_container import serving; serving.main()"
    # MMS's model archiver and logs write under the working directory.
    proc = Proc([py, "-c", code], env, open(os.path.join(work, "mms-%d.log" % port), "ab"), cwd=base)
    return proc, "http://127.0.0.1:%d/invocations" % port, port


def start_model_server(model_dir, work, clary=CLARY):
    port = free_port()
    env = dict(os.environ, SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS))
    proc = Proc([clary, "model-server", "--model-dir", model_dir, "--port", str(port), "--python", RUNTIME_PY,
                 "--run-dir", os.path.join(work, "ms-%d" % port)], env, open(os.path.join(work, "ms-%d.log" % port), "ab"))
    return proc, "http://127.0.0.1:%d/invocations" % port, port


def start_endpoint(model_dir, work, kind, clary=CLARY):
    """A Clary server with the model deployed as an endpoint; returns the InvokeEndpoint URL and
    the signing key."""
    data = os.path.join(work, "clary-%s" % kind)
    port = free_port()
    proc = Proc([clary, "server", "--listen", "127.0.0.1:%d" % port, "--data-dir", data, "--runtimes-dir", RUNTIMES],
                dict(os.environ), open(os.path.join(work, "server-%s.log" % kind), "ab"))
    url = "http://127.0.0.1:%d" % port
    env = dict(os.environ, AWS_ENDPOINT_URL=url)
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/_clary/health", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    out = subprocess.run([clary, "env", "--data-dir", data], capture_output=True, text=True, check=True).stdout
    keys = dict(re.findall(r"export (\w+)='([^']*)'", out))
    env.update(keys)
    tar = os.path.join(work, "%s-model.tar.gz" % kind)
    subprocess.run(["tar", "-czf", tar, "-C", model_dir, "."], check=True)
    bucket = "sagemaker-us-east-1-" + json.load(open(os.path.join(data, "identity.json")))["account"]
    import boto3
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    s3.upload_file(tar, bucket, "bench/%s/model.tar.gz" % kind)
    name = "bench-" + kind
    subprocess.run([clary, "deploy", "--model-data", "s3://%s/bench/%s/model.tar.gz" % (bucket, kind), "--name", name,
                    "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=%d" % WORKERS], env=env, check=True, capture_output=True)
    sign = "%s:%s:us-east-1" % (keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])

    def stop():
        subprocess.run([clary, "endpoints", "delete", name], env=env, capture_output=True)
        for _ in range(200):
            if name not in subprocess.run([clary, "endpoints", "list"], env=env, capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        proc.stop()

    return stop, "%s/endpoints/%s/invocations" % (url, name), sign


def load(url, body_file, concurrency, seconds, sign=None):
    args = [LOADGEN, url, body_file, "--concurrency", str(concurrency), "--seconds", str(seconds),
            "--requests", "1000000", "--warmup", str(max(20, concurrency * 2))]
    if sign:
        args += ["--sign", sign]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--before", metavar="BIN", help="a second clary binary (an older build) measured in the same run")
    a = ap.parse_args()
    if a.before and not os.path.exists(a.before):
        sys.exit("--before %s does not exist" % a.before)
    binaries = {"": CLARY, "@before": os.path.abspath(a.before)} if a.before else {"": CLARY}
    targets = ["mms"] + ["%s%s" % (t, b) for b in binaries for t in ("clary", "endpoint")]
    for path in (CLARY, LOADGEN, RUNTIME_PY):
        if not os.path.exists(path):
            sys.exit("missing %s: run `cargo build --release` and `clary runtimes build mxnet-1.9` first" % path)
    mms_py = ensure_mms()
    work = tempfile.mkdtemp(prefix="clary-bench-serving-")
    shims = os.path.join(work, "shims")
    for binary in binaries.values():
        subprocess.run([binary, "model-server", "--help"], capture_output=True, check=True)
    os.makedirs(shims)
    shutil.copytree(os.path.join(ROOT, "python", "clary_serving"), os.path.join(shims, "clary_serving"))
    report = {}
    for kind in a.models.split(","):
        model_dir = os.path.join(work, kind)
        subprocess.run([RUNTIME_PY, "-c", MAKE_MODELS, model_dir, kind], check=True, capture_output=True)
        shape = (784,) if kind == "mlp" else (1, 28, 28)
        import numpy as np
        body = json.dumps(np.random.RandomState(0).rand(1, *shape).round(4).tolist())
        body_file = os.path.join(work, "%s.json" % kind)
        open(body_file, "w").write(body)
        floor = json.loads(subprocess.run([RUNTIME_PY, "-c", IN_PROCESS, model_dir, body_file, shims],
                                          capture_output=True, text=True, check=True).stdout)
        results = {target: {c: [] for c in CONCURRENCY} for target in targets}
        for r in range(a.rounds):
            # MMS first; with --before the two binaries swap places every other round.
            order = targets if r % 2 == 0 else targets[:1] + targets[3:] + targets[1:3]
            for target in order:
                binary = binaries["@before" if target.endswith("@before") else ""]
                if target == "mms":
                    proc, url, port = start_mms(mms_py, model_dir, work)
                    stop, sign = proc.stop, None
                    wait_ping(port, predict_body=body.encode())
                elif target.startswith("clary"):
                    proc, url, port = start_model_server(model_dir, work, binary)
                    stop, sign = proc.stop, None
                    wait_ping(port)
                else:
                    stop, url, sign = start_endpoint(model_dir, work, "%s-%d%s" % (
                        kind, r, "-before" if target.endswith("@before") else ""), binary)
                try:
                    for c in CONCURRENCY:
                        res = load(url, body_file, c, a.seconds, sign)
                        results[target][c].append(res)
                        print("%-4s round %d %-8s c=%-3d %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (
                            kind, r + 1, target, c, res["rps"], res["p50_ms"], res["p99_ms"], res["errors"]), flush=True)
                        time.sleep(2)  # MMS keeps working on abandoned requests; let it drain
                finally:
                    stop()
        report[kind] = {"floor": floor, "results": results}
    print()
    print("Medians over %d rounds of %.0f s each, %d workers, single-row JSON requests." % (a.rounds, a.seconds, WORKERS))
    for kind, rep in report.items():
        f = rep["floor"]
        print("\n%s: in-process forward %.3f ms; the toolkit's Python path in-process %.3f ms" % (
            kind.upper(), f["forward_ms"], f["toolkit_path_ms"]))
        w = max(10, max(len(t) + 1 for t in targets))
        print("%-*s %-4s %10s %9s %9s %12s %12s" % (w, "server", "c", "req/s", "p50 ms", "p99 ms", "vs MMS rps", "vs MMS p50"))
        med = lambda target, c, k: statistics.median(x[k] for x in rep["results"][target][c])
        for target in targets:
            for c in CONCURRENCY:
                rps, p50, p99 = med(target, c, "rps"), med(target, c, "p50_ms"), med(target, c, "p99_ms")
                print("%-*s %-4d %10.0f %9.2f %9.2f %11.2fx %11.2fx" % (
                    w, target, c, rps, p50, p99, rps / med("mms", c, "rps"), med("mms", c, "p50_ms") / p50))
        print("model-server p50 overhead over in-process forward at c=1: %.3f ms" % (med("clary", 1, "p50_ms") - f["forward_ms"]))
        if a.before:
            print("model-server@before p50 overhead over in-process forward at c=1: %.3f ms" % (
                med("clary@before", 1, "p50_ms") - f["forward_ms"]))
            print("after/before (req/s: above 1 is faster; p50, p99: below 1 is faster)")
            print("%-10s %-4s %10s %9s %9s" % ("server", "c", "req/s", "p50", "p99"))
            for target in ("clary", "endpoint"):
                for c in CONCURRENCY:
                    print("%-10s %-4d %9.3fx %8.3fx %8.3fx" % (
                        target, c, med(target, c, "rps") / med(target + "@before", c, "rps"),
                        med(target, c, "p50_ms") / med(target + "@before", c, "p50_ms"),
                        med(target, c, "p99_ms") / med(target + "@before", c, "p99_ms")))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
