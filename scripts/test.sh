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

V1_VENV=${CLARY_SDK_V1_VENV:-$CACHE/clary-sdk1-venv}
echo "== SageMaker SDK v1 environment ($V1_VENV)"
stamp="$V1_VENV/.clary-requirements"
if [ ! -x "$V1_VENV/bin/python" ] || ! cmp -s tests/requirements-sdk-v1.txt "$stamp"; then
  "$PYTHON" -m venv "$V1_VENV"
  "$V1_VENV/bin/python" -m pip install --quiet -r tests/requirements-sdk-v1.txt
  cp tests/requirements-sdk-v1.txt "$stamp"
fi
export CLARY_SDK_V1_PYTHON="$V1_VENV/bin/python"

V3_VENV=${CLARY_SDK_V3_VENV:-$CACHE/clary-sdk3-venv}
echo "== SageMaker SDK v3 environment ($V3_VENV)"
stamp="$V3_VENV/.clary-requirements"
if [ ! -x "$V3_VENV/bin/python" ] || ! cmp -s tests/requirements-sdk-v3.txt "$stamp"; then
  "$PYTHON" -m venv "$V3_VENV"
  "$V3_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$V3_VENV/bin/python" -m pip install --quiet -r tests/requirements-sdk-v3.txt
  cp tests/requirements-sdk-v3.txt "$stamp"
fi
export CLARY_SDK_V3_PYTHON="$V3_VENV/bin/python"

# Headless Chromium and its driver from Debian, for the console's browser tests
# (tests/compat/test_console.py); where they cannot be installed, those tests skip and say why.
echo "== browser (Debian's chromium and chromium-driver)"
if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then
  echo "installed: $(chromedriver --version | head -1)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
else
  echo "not root (or no apt-get): chromium cannot be installed; the console's browser tests will skip"
fi

echo "== format and lints"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== build"
cargo build --locked
export CLARY_BIN="$CARGO_TARGET_DIR/debug/clary"

# Built up front so no test's timeout includes a runtime build: 1.9 for almost every test,
# 1.3 (real MXNet 1.3.0) for the SDK v1 example.
for rt in mxnet-1.9 mxnet-1.3; do
  echo "== runtime $rt ($CLARY_RUNTIMES_DIR)"
  "$CLARY_BIN" runtimes build "$rt" --runtimes-dir "$CLARY_RUNTIMES_DIR"
done

# What the services started below need at exit, in shell.
CLEANUP=""
trap 'eval "$CLEANUP"' EXIT

# A real 2-node Slurm cluster (loopback) for the Slurm executor's tests; needs root to install
# and start it. Where it cannot start, those tests skip and say why.
echo "== Slurm cluster (2 nodes on loopback)"
if [ "$(id -u)" = 0 ]; then
  if bash scripts/slurm.sh up 2; then
    CLEANUP+='bash "$ROOT/scripts/slurm.sh" down 2; '
  else
    echo "Slurm could not start: the Slurm tests will skip"
  fi
else
  echo "not root: Slurm cannot be installed and started here; the Slurm tests will skip"
fi

# A real external S3 store (Ceph's RADOS Gateway from Debian, on loopback) for the tests that
# keep Clary's data in one; needs root to install. Where it cannot start, those tests skip.
echo "== Ceph RADOS Gateway (external S3 store on loopback)"
if [ "$(id -u)" = 0 ]; then
  if ! command -v radosgw >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd >/dev/null
  fi
  free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  export CEPH_DIR=$(mktemp -d /tmp/clary-test-ceph.XXXXXX)
  RGW_PORT=$(free_port) MON_PORT=$(free_port)
  export RGW_PORT MON_PORT OSD_PORTS="$((MON_PORT + 2))-$((MON_PORT + 40))" OSD_STORE=bluestore
  # The key pair goes to start.sh alone: everything exported here reaches the servers the
  # tests start, and a test checks that no job sees the store's secret.
  if command -v radosgw >/dev/null && S3_ACCESS_KEY=clary-test S3_SECRET_KEY=clary-test-secret bash scripts/ceph-rgw/start.sh; then
    CLEANUP+='bash "$ROOT/scripts/ceph-rgw/stop.sh"; rm -rf "$CEPH_DIR"; '
    export CLARY_TEST_S3_ENDPOINT="http://127.0.0.1:$RGW_PORT" CLARY_TEST_S3_ACCESS_KEY=clary-test \
      CLARY_TEST_S3_SECRET_KEY=clary-test-secret CLARY_TEST_S3_LOG="$CEPH_DIR/log/client.rgw.a.log"
  else
    echo "Ceph RGW could not start: the external store's tests will skip"
  fi
else
  echo "not root: Ceph cannot be installed and started here; the external store's tests will skip"
fi

echo "== unit tests"
cargo test --locked --workspace

echo "== end-to-end tests"
cd "$ROOT/tests/compat"
"$VENV/bin/python" -m pytest -q -p no:warnings "$@"
