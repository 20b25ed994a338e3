#!/usr/bin/env bash
# Clary's main job on the embedded default, on a fresh machine: build, start a server on a free
# port with a throwaway data dir, train the MNIST-style example, deploy it to an endpoint, send
# it five test images and print the predictions next to the true labels.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
export CLARY_RUNTIMES_DIR=${CLARY_RUNTIMES_DIR:-$CACHE/clary/runtimes}
cargo build --release --locked
CLARY=$PWD/target/release/clary
"$CLARY" runtimes build mxnet-1.9
# The runtime's Python has numpy; the data generator needs nothing else.
"$CLARY_RUNTIMES_DIR/mxnet-1.9/bin/python" examples/mnist/generate_data.py
DATA=$(mktemp -d)
"$CLARY" server --listen 127.0.0.1:0 --data-dir "$DATA" > "$DATA/server.out" 2>"$DATA/server.log" &
SERVER=$!
JOB=mnist-demo-$(date +%s)
cleanup() {
    # Endpoints outlive a server restart by design; delete the demo's before ending the server.
    "$CLARY" endpoints delete "$JOB" >/dev/null 2>&1 || true
    for _ in $(seq 100); do "$CLARY" endpoints list 2>/dev/null | grep -q "$JOB" || break; sleep 0.1; done
    kill $SERVER 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do grep -q listening "$DATA/server.out" 2>/dev/null && break; sleep 0.1; done
eval "$("$CLARY" env --data-dir "$DATA")"
"$CLARY" train examples/mnist/train.py --source-dir examples/mnist \
    --channel train=examples/mnist/data/train --channel test=examples/mnist/data/test \
    --hp epochs=2 --hp learning-rate=0.1 --framework-version 1.9.0 --job-name "$JOB" --wait
"$CLARY" deploy "$JOB" --name "$JOB"
BODY=$("$CLARY_RUNTIMES_DIR/mxnet-1.9/bin/python" -c '
import json, numpy as np
print(json.dumps(np.load("examples/mnist/data/test/images.npy")[:5].tolist()))')
"$CLARY" invoke "$JOB" --json "$BODY" > "$DATA/prediction.json"
"$CLARY_RUNTIMES_DIR/mxnet-1.9/bin/python" - "$DATA/prediction.json" <<'PY'
import json, sys, numpy as np
scores = np.array(json.load(open(sys.argv[1])))
labels = np.load("examples/mnist/data/test/labels.npy")[:5].astype(int)
print("predicted classes:", scores.argmax(axis=1).tolist())
print("true labels:      ", labels.tolist())
PY
