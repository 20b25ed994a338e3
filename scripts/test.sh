#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (cached under ~/.cache),
# builds Clary, runs the Rust unit tests, then the end-to-end suite with real clients.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/clary-target}
VENV=${CLARY_TEST_VENV:-$CACHE/clary-test-venv}
export CLARY_RUNTIMES_DIR=${CLARY_RUNTIMES_DIR:-$CACHE/clary/runtimes}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$CACHE/pip}
PYTHON=${PYTHON:-python3}

echo "== test environment ($VENV)"
stamp="$VENV/.clary-requirements"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s tests/requirements.txt "$stamp"; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi

echo "== build"
cargo build --locked
export CLARY_BIN="$CARGO_TARGET_DIR/debug/clary"

echo "== runtime mxnet-1.9 ($CLARY_RUNTIMES_DIR)"
"$CLARY_BIN" runtimes build mxnet-1.9 --runtimes-dir "$CLARY_RUNTIMES_DIR"

echo "== unit tests"
cargo test --locked --workspace

echo "== end-to-end tests"
cd "$ROOT/tests/compat"
"$VENV/bin/python" -m pytest -q -p no:warnings "$@"
