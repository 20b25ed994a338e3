"""SageMaker SDK v2 deploy/predict/delete, unchanged, against a real Clary server."""
import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT
from test_training import EXAMPLE, mnist_data  # noqa: F401 (a fixture)


def test_sdk_v2_estimator_deploy_and_mxnet_model_deploy(server, mnist_data):
    env = dict(os.environ, **server.env())
    here = os.path.join(ROOT, "tests", "compat", "sdk")
    proc = subprocess.run(
        [sys.executable, os.path.join(here, "deploy_v2.py"), EXAMPLE, mnist_data, os.path.join(here, "inference")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "configprovider" not in l)[-6000:]
    # The SDK prints a '!' per endpoint poll before our JSON line.
    last = proc.stdout.strip().splitlines()[-1]
    out = json.loads(last[last.index("{"):])
    want = np.array(out["want"])
    np.testing.assert_allclose(np.array(out["default"]), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(out["csv"], dtype=float), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(out["npy"]), want, rtol=1e-4, atol=1e-5)
    assert out["instances"] == 2
    assert out["custom"] == {"classes": want.argmax(axis=1).tolist()}
    sm = server.client("sagemaker")
    names = [e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"]]
    assert out["endpoint"] not in names or sm.describe_endpoint(EndpointName=out["endpoint"])["EndpointStatus"] == "Deleting"
