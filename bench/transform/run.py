"""bench/transform: CSV records of the MLP of `bench/serving` (784 inputs, 10 outputs) through a
batch transform job with 2 instances, end to end (create to Completed: S3 reads, the model
servers, S3 writes), against the same model run in-process: a Python loop of `mod.predict`
over batches of rows already in memory as a NumPy array (the floor: no parsing, no I/O).
Also shown, not a ratio's anchor: the in-process loop when it parses the CSV text itself
(np.loadtxt, what the default input_fn does), which is where most of a transform's time goes.
Prints records/s for each, and transform/floor. Never asserts.

    python bench/transform/run.py [--records 200000] [--objects 8] [--rounds 1]

Needs a built `clary` (CLARY_BIN, default ~/.cache/clary-target/release/clary) and the
mxnet-1.9 runtime (CLARY_RUNTIMES_DIR). The server runs on a fresh data dir and a loopback
port chosen by the kernel, and is stopped by its PID. This machine's speed drifts: with
--rounds N the floor and the job alternate, and medians are printed.
"""
import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from clary_server import RUNTIMES, ClaryServer  # noqa: E402

CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "clary-target"))
CLARY = os.environ.get("CLARY_BIN", os.path.join(TARGET, "release", "clary"))
RUNTIME_PY = os.path.join(RUNTIMES, "mxnet-1.9", "bin", "python")
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"
# Rows are MNIST-like: mostly zeros, the rest 0-255; a block of distinct rows repeats.
BLOCK = 1000

MAKE = r'''
import json, os, sys
import numpy as np
import mxnet as mx
from mxnet import gluon
out = sys.argv[1]
mx.random.seed(0)
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(256, activation="relu"), gluon.nn.Dense(128, activation="relu"), gluon.nn.Dense(10))
net.initialize(mx.init.Xavier())
net.hybridize()
net(mx.nd.zeros((1, 784)))
os.makedirs(os.path.join(out, "code"), exist_ok=True)
net.export(os.path.join(out, "model"), epoch=0)
json.dump([{"name": "data", "shape": [1, 784]}], open(os.path.join(out, "model-shapes.json"), "w"))
open(os.path.join(out, "code", "inference.py"), "w").write("# default handlers\n")
rs = np.random.RandomState(0)
rows = rs.randint(0, 256, size=(%d, 784)) * (rs.rand(%d, 784) < 0.2)
np.save(os.path.join(sys.argv[2], "block.npy"), rows.astype("float32"))
with open(os.path.join(sys.argv[2], "block.csv"), "w") as f:
    np.savetxt(f, rows, fmt="%%d", delimiter=",")
''' % (BLOCK, BLOCK)

FLOOR = r'''
import json, sys, time, io
import numpy as np
import mxnet as mx
model_dir, block, n, batch, parse = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
sym, args, aux = mx.model.load_checkpoint(model_dir + "/model", 0)
mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
mod.bind(for_training=False, data_shapes=[("data", (batch, 784))])
mod.set_params(args, aux)
rows = np.load(block + "/block.npy")
text = open(block + "/block.csv").read().splitlines()
reps = -(-n // len(rows))
data = np.tile(rows, (reps, 1))[:n]
lines = (text * reps)[:n]
mod.predict(mx.io.NDArrayIter(data[:batch], batch_size=batch))
t = time.perf_counter()
done = 0
for i in range(0, n, batch):
    if parse:
        x = np.loadtxt(io.StringIO("\n".join(lines[i:i + batch])), delimiter=",", ndmin=2)
    else:
        x = data[i:i + batch]
    out = mod.predict(mx.io.NDArrayIter(x, batch_size=len(x))).asnumpy()
    done += len(out)
print(json.dumps({"records_per_s": done / (time.perf_counter() - t)}))
'''


def floor(model_dir, block_dir, n, batch, parse):
    out = subprocess.run([RUNTIME_PY, "-c", FLOOR, model_dir, block_dir, str(n), str(batch), "1" if parse else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["records_per_s"]


def transform(server, bucket, model, n, prefix, job):
    sm, logs = server.client("sagemaker"), server.client("logs")
    t = time.perf_counter()
    sm.create_transform_job(
        TransformJobName=job, ModelName=model,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://%s/%s" % (bucket, prefix)}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://%s/out/%s" % (bucket, job), "Accept": "text/csv", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
        BatchStrategy="MultiRecord", MaxPayloadInMB=6)
    while True:
        d = sm.describe_transform_job(TransformJobName=job)
        if d["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - t
    if d["TransformJobStatus"] != "Completed":
        raise RuntimeError("transform job %s: %s" % (job, d.get("FailureReason")))
    # Where the time went, from the hosts' logs.
    notes = []
    for s in logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs", logStreamNamePrefix=job + "/")["logStreams"]:
        for e in logs.get_log_events(logGroupName="/aws/sagemaker/TransformJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]:
            if "Done: " in e["message"] or "Model ready" in e["message"]:
                notes.append("%s: %s" % (s["logStreamName"].split("/", 1)[1], e["message"].split("INFO", 1)[-1].strip()))
    return n / elapsed, elapsed, notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1000, help="rows per mod.predict in the floor")
    ap.add_argument("--workers", type=int, help="SAGEMAKER_MODEL_SERVER_WORKERS per instance [the model server's default: one per core]")
    a = ap.parse_args()
    if not os.path.exists(CLARY):
        sys.exit("no clary binary at %s; build it (cargo build --release) or set CLARY_BIN" % CLARY)
    work = tempfile.mkdtemp(prefix="clary-bench-transform-")
    model_dir, block_dir = os.path.join(work, "model"), os.path.join(work, "block")
    os.makedirs(model_dir)
    os.makedirs(block_dir)
    subprocess.run([RUNTIME_PY, "-c", MAKE, model_dir, block_dir], check=True)
    server = ClaryServer(CLARY, "transform")
    try:
        s3, sm = server.client("s3"), server.client("sagemaker")
        bucket = "bench-transform"
        s3.create_bucket(Bucket=bucket)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(model_dir, arcname=".")
        s3.put_object(Bucket=bucket, Key="model/model.tar.gz", Body=buf.getvalue())
        sm.create_model(ModelName="mlp", ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
                        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://%s/model/model.tar.gz" % bucket,
                                          "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": str(a.workers)} if a.workers else {}})
        block = open(os.path.join(block_dir, "block.csv")).read().splitlines()
        per = -(-a.records // a.objects)
        size = 0
        for i in range(a.objects):
            lines = [block[(i * per + j) % len(block)] for j in range(min(per, a.records - i * per))]
            body = ("\n".join(lines) + "\n").encode()
            size += len(body)
            s3.put_object(Bucket=bucket, Key="input/part-%03d.csv" % i, Body=body)
        print("%d records (%.0f MB of CSV) in %d objects; MLP 784-256-128-10; 2 instances, MultiRecord, 6 MB payloads"
              % (a.records, size / 1e6, a.objects), flush=True)
        floors, parsed, jobs = [], [], []
        for r in range(a.rounds):
            floors.append(floor(model_dir, block_dir, a.records, a.batch, parse=False))
            rate, elapsed, notes = transform(server, bucket, "mlp", a.records, "input/", "bench-%d" % r)
            jobs.append(rate)
            parsed.append(floor(model_dir, block_dir, a.records, a.batch, parse=True))
            print("round %d: floor %.0f rec/s, transform %.0f rec/s (%.1f s end to end), in-process with CSV parsing %.0f rec/s"
                  % (r + 1, floors[-1], rate, elapsed, parsed[-1]), flush=True)
            for n in notes:
                print("    " + n)
        f, t, p = statistics.median(floors), statistics.median(jobs), statistics.median(parsed)
        print()
        print("%-44s %12s" % ("", "records/s"))
        print("%-44s %12.0f" % ("in-process mod.predict (the floor)", f))
        print("%-44s %12.0f" % ("in-process np.loadtxt + mod.predict", p))
        print("%-44s %12.0f" % ("transform job, 2 instances, end to end", t))
        print("transform / floor: %.2f   (goal 0.80)" % (t / f))
        print("transform / in-process with parsing: %.2f" % (t / p))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(server.work, ignore_errors=True)


if __name__ == "__main__":
    main()
