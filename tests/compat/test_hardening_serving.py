"""The model server under hostile input (issue 15): the default handlers answer 400 with a clear
message for bodies that do not parse or do not fit, and no answer carries a traceback or a
server path. Real boto3 and real MXNet against a real `clary server`."""
import io
import json
import time

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
    deadline = time.time() + 20
    while True:  # the log ships a little after the answer
        log = endpoint_log(logs, custom)
        if ("Traceback" in log and "/nonexistent/clary-test/weights.bin" in log) or time.time() > deadline:
            break
        time.sleep(0.3)
    assert "Traceback" in log and "/nonexistent/clary-test/weights.bin" in log, log[-3000:]
    # And good requests still work on both paths.
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 784), dtype="float32"))
    for name in endpoints:
        r = rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Body=buf.getvalue())
        assert np.array(json.loads(r["Body"].read())).shape == (2, 10)


NESTED_OUTPUT_FN = '''
import json

def output_fn(prediction, accept):
    return json.dumps({"from": "%s", "rows": prediction.shape[0]}), "application/json"
'''


def test_program_in_a_subfolder_of_code_is_found_or_the_endpoint_says_why(sm, s3, rt, logs, bucket):
    """SAGEMAKER_PROGRAM names a file by its name alone when the training entry point sat in a
    subfolder of source_dir; on SageMaker such an endpoint serves, so here too. Where the name
    is ambiguous or absent the endpoint still starts, as on SageMaker, and says why."""
    files, _ = mlp_files()
    cases = {
        # One file of that name: it is the user's module, imported from its folder.
        "nested": ({"code/mxnet_mnist/mnist.py": NESTED_OUTPUT_FN % "nested",
                    "code/mxnet_mnist/helper.py": "X = 1\n"}, "mnist.py"),
        # Named with its folder.
        "pathed": ({"code/sub/entry.py": NESTED_OUTPUT_FN % "pathed"}, "sub/entry.py"),
        "ambiguous": ({"code/a/mnist.py": NESTED_OUTPUT_FN % "a", "code/b/mnist.py": NESTED_OUTPUT_FN % "b"}, "mnist.py"),
        "absent": ({"code/other.py": "X = 1\n"}, "mnist.py"),
    }
    names = {}
    for case, (code, program) in cases.items():
        names[case] = unique("prog-" + case)
        deploy(sm, s3, bucket, names[case], {**files, **code}, env={"SAGEMAKER_PROGRAM": program})
    why = {
        "ambiguous": "several files have that name: code/a/mnist.py, code/b/mnist.py",
        "absent": "no file of that name is in it or its folders",
    }
    try:
        for case, name in names.items():
            d = wait_endpoint(sm, name)
            assert d["EndpointStatus"] == "InService", (case, d.get("FailureReason"))
            body = json.dumps([[0.0] * 784] * 2)
            if case in why:
                with pytest.raises(ClientError) as e:
                    rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=body)
                code, original, message = model_error(e)
                assert (code, original) == ("ModelError", 503), (case, e.value.response)
                assert "SAGEMAKER_PROGRAM 'mnist.py' was not found" in message and why[case] in message, message
                assert why[case] in endpoint_log(logs, name)
            else:
                r = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=body)
                assert json.loads(r["Body"].read()) == {"from": case, "rows": 2}, case
        assert "using code/mxnet_mnist/mnist.py, the only file of that name" in endpoint_log(logs, names["nested"])
    finally:
        for name in names.values():
            sm.delete_endpoint(EndpointName=name)
