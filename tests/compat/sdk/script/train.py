"""The SDK tests' training script: checks the hyperparameters' JSON types, uses a package from
requirements.txt and a module from a `dependencies` folder, optionally sleeps or fails."""
import json
import os
import sys
import time

import sdkhelpers  # from dependencies=[.../sdkhelpers]
import tabulate  # from requirements.txt

hps = json.loads(os.environ["SM_HPS"])
print("HPS " + json.dumps(hps, sort_keys=True), flush=True)
print("ARGV " + json.dumps(sys.argv[1:]), flush=True)
print("CHANNELS " + json.dumps(sorted(json.loads(os.environ["SM_CHANNELS"]))), flush=True)
print(tabulate.tabulate([[sdkhelpers.greeting(), len(hps)]], headers=["helper", "hps"]), flush=True)
if hps.get("fail"):
    raise ValueError("deliberate failure requested by the hyperparameters")
for i in range(int(hps.get("sleep", 0))):
    print("still training, second %d" % i, flush=True)
    time.sleep(1)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "hps.json"), "w") as f:
    json.dump(hps, f)
print("training done", flush=True)
