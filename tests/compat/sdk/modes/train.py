"""The SDK input-mode and distribution scenarios' script: reports what this host sees of its
channels (files, or the Pipe-mode FIFO's bytes), the parameter server's worker count when
there is one, and leaves a checkpoint file."""
import hashlib
import json
import os

config = json.loads(os.environ["SM_INPUT_DATA_CONFIG"])
host = os.environ["SM_CURRENT_HOST"]
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
report = {"host": host, "config": config}
for channel, cfg in config.items():
    if cfg["TrainingInputMode"] == "Pipe":
        passes = []
        for p in (0, 1):
            with open(os.path.join(data, "%s_%d" % (channel, p)), "rb") as f:
                body = f.read()
            passes.append({"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        report[channel] = passes
    else:
        root = os.environ["SM_CHANNEL_" + channel.upper()]
        report[channel] = sorted(os.path.relpath(os.path.join(d, f), root)
                                 for d, _, fs in os.walk(root) for f in fs)
if os.environ.get("DMLC_ROLE") == "worker":
    import mxnet as mx
    kv = mx.kv.create("dist_sync")
    report["num_workers"] = kv.num_workers
    report["rank"] = kv.rank
checkpoints = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints")
if os.path.isdir(checkpoints):
    with open(os.path.join(checkpoints, "seen-by-%s.json" % host), "w") as f:
        json.dump(report, f)
print("MODES " + json.dumps(report, sort_keys=True), flush=True)
