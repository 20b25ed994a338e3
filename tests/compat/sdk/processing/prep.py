"""The processing tests' script (FrameworkProcessor and ScriptProcessor): reads its inputs at
/opt/ml/processing/..., uses real MXNet, writes its outputs, and prints a `PROC` line of what
it saw."""
import argparse
import glob
import hashlib
import json
import os
import socket
import time

import mxnet as mx

ROOT = "/opt/ml/processing"
p = argparse.ArgumentParser()
p.add_argument("--scale", type=float, default=1.0)
p.add_argument("--mode", default="framework")
p.add_argument("--sleep", type=int, default=0)
p.add_argument("--exit", type=int, default=0)
args = p.parse_args()
seen = {"argv_scale": args.scale, "env": os.environ.get("PROC_FLAVOUR"),
        "resourceconfig": json.load(open("/opt/ml/config/resourceconfig.json")),
        "hostname": socket.gethostname(), "mxnet": mx.__version__,
        "inputs": {d: sorted(os.listdir(os.path.join(ROOT, "input", d)))
                   for d in sorted(os.listdir(ROOT + "/input")) if os.path.isdir(os.path.join(ROOT, "input", d))}}
if args.mode == "framework":
    import sdkhelpers  # dependencies=[.../sdkhelpers]
    import tabulate  # requirements.txt, installed by runproc.sh
    seen["helper"] = sdkhelpers.greeting()
    seen["tabulate"] = tabulate.__version__
    # CSV rows x,y: the processed set is (scale*x, y) as MXNet arrays, for the training job.
    rows = []
    for path in sorted(glob.glob(ROOT + "/input/raw/*.csv")):
        rows += [[float(v) for v in line.split(",")] for line in open(path) if line.strip()]
    data = mx.nd.array(rows)
    data[:, 0] *= args.scale
    os.makedirs(ROOT + "/train", exist_ok=True)
    mx.nd.save(ROOT + "/train/data.nd", {"data": data})
    # The script may change its inputs (the store keeps its bytes).
    with open(glob.glob(ROOT + "/input/raw/*.csv")[0], "a") as f:
        f.write("999,999\n")
    seen["rows"] = len(rows)
elif args.mode == "script":
    host = seen["resourceconfig"]["current_host"]
    seen["shard"] = sorted(os.path.basename(f) for f in glob.glob(ROOT + "/input/shards/*"))
    digest = hashlib.sha256()
    with open(ROOT + "/input/stream_0", "rb") as fifo:  # Pipe mode, gzip decompressed
        for chunk in iter(lambda: fifo.read(1 << 16), b""):
            digest.update(chunk)
    seen["pipe_sha256"] = digest.hexdigest()
    os.makedirs(ROOT + "/report", exist_ok=True)
    with open(ROOT + "/report/%s.json" % host, "w") as f:
        json.dump(seen, f)
    # Continuous: this file is uploaded while the job still runs; the test sees it early.
    os.makedirs(ROOT + "/progress", exist_ok=True)
    with open(ROOT + "/progress/%s-started.txt" % host, "w") as f:
        f.write("started\n")
print("PROC " + json.dumps(seen, sort_keys=True), flush=True)
for i in range(args.sleep):
    print("still processing, second %d" % i, flush=True)
    time.sleep(1)
raise SystemExit(args.exit)
