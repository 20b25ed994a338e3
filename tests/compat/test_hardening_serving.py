"""The model server under hostile input (issue 15): the default handlers answer 400 with a clear
message for bodies that do not parse or do not fit, and no answer carries a traceback or a
server path. Real boto3 and real MXNet against a real `clary server`."""
import io
import json

import numpy as np
import pytest
from botocore.exceptions import ClientError

from conftest import deploy, endpoint_log, unique, wait_endpoint
from test_hosting import mlp_files, model_error

# A user predict_fn sends requests through the default (unfused) input_fn; it fails on request.
PREDICT_FN = '''
def predict_fn(data, model):
    if data.data[0][1][0][0].asscalar() == 7:
        open("/nonexistent/clary-test/weights.bin")
    if data.data[0][1][0][0].asscalar() == 8:
        import mxnet as mx
        mx.nd.ones((2, 3)).reshape((7,))
    return model.predict(data)
'''

NPY_1TIB = (b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little")
            + b"{'descr': '<f4', 'fortran_order': False, 'shape': (274877906944,), }".ljust(117) + b"\n"
            + b"\0" * 64)

BAD_BODIES = [
    ("csv-shape", "text/csv", "1,2,3", "do not make whole rows"),
    ("csv-empty", "text/csv", "", "body is empty"),
    ("json-string", "application/json", '"a string"', "body is a string"),
    ("json-strings", "application/json", json.dumps([["a"] * 784]), "must hold numbers"),
    ("json-deep", "application/json", "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("json-empty", "application/json", "[]", "no input rows"),
    ("npy-1tib", "application/x-npy", NPY_1TIB, "1099511627776 bytes"),
]


def _clean(message, server):
    assert "Traceback" not in message and 'File "' not in message, message
    assert server.data_dir not in message and "/nonexistent/" not in message, message


@pytest.fixture(scope="module")
def endpoints(sm, s3, bucket):
    files, _ = mlp_files()
    plain, custom = unique("hostile"), unique("hostile-fn")
    deploy(sm, s3, bucket, plain, files)
    deploy(sm, s3, bucket, custom, {**files, "code/inference.py": PREDICT_FN})
    for name in (plain, custom):
        d = wait_endpoint(sm, name)
        assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    yield plain, custom
    for name in (plain, custom):
        sm.delete_endpoint(EndpointName=name)


@pytest.mark.parametrize("case,content_type,body,text", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_default_handlers_answer_400_for_hostile_bodies(server, rt, endpoints, case, content_type, body, text):
    for name in endpoints:
        with pytest.raises(ClientError) as e:
            rt.invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body)
        code, original, message = model_error(e)
        assert (code, original) == ("ModelError", 400), (name, e.value.response)
        assert text in message, (name, message)
        _clean(message, server)


def test_a_failing_handler_answers_500_without_traceback_or_path(server, rt, logs, endpoints):
    _, custom = endpoints
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=custom, ContentType="application/json", Body=json.dumps([[7.0] * 784]))
    code, original, message = model_error(e)
    assert (code, original) == ("ModelError", 500), e.value.response
    assert message.startswith("FileNotFoundError: "), message
    _clean(message, server)
    # MXNet's own errors carry a C++ stack in their text: only its message is answered.
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName=custom, ContentType="application/json", Body=json.dumps([[8.0] * 784]))
    code, original, message = model_error(e)
    assert (code, original) == ("ModelError", 500), e.value.response
    assert message.startswith("MXNetError: "), message
    _clean(message, server)
    # The whole story is in the endpoint's log.
    log = endpoint_log(logs, custom)
    assert "Traceback" in log and "/nonexistent/clary-test/weights.bin" in log
    # And good requests still work on both paths.
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 784), dtype="float32"))
    for name in endpoints:
        r = rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Body=buf.getvalue())
        assert np.array(json.loads(r["Body"].read())).shape == (2, 10)
