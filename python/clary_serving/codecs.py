"""Decoding request bodies into numpy arrays and encoding predictions, as the MXNet serving
toolkit's default handlers do (JSON, CSV, NPY), with honest errors instead of its blanket 500s."""

import io
import json
import math
import os
import warnings

import numpy as np

from .errors import BadRequest, UnsupportedAccept, UnsupportedContentType

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"


def default_accept():
    return os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON


def body_for_handler(body, content_type):
    """The toolkit hands JSON and CSV bodies to handlers as text, everything else as bytes."""
    if content_type in (JSON, CSV):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the {content_type} body is not valid UTF-8: {e}")
    return body


def decode(data, content_type, supported):
    """A numeric numpy array from a request body (text or bytes) of one of the `supported`
    types; anything else is a BadRequest that says what was wrong."""
    if content_type not in supported:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported by the default input_fn; "
            f"send one of {', '.join(supported)} or provide your own input_fn"
        )
    try:
        if content_type == JSON:
            array = _json_array(data)
        elif content_type == CSV:
            array = _csv_array(data)
        else:
            array = _npy_array(data)
    except RecursionError:
        raise BadRequest(f"the {content_type} body is nested too deeply")
    except (ValueError, TypeError, OSError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid {content_type}: {e}")
    if array.dtype.kind not in "biuf":
        raise BadRequest(
            f"the {content_type} body must hold numbers: a number or (nested) lists of numbers "
            "of equal length, at most 32 deep"
        )
    return array


def _json_array(data):
    value = json.loads(data)
    if isinstance(value, (str, dict)) or value is None:
        kind = {str: "a string", dict: "an object"}.get(type(value), "null")
        raise BadRequest(f"the {JSON} body is {kind}; send a number or (nested) lists of numbers")
    with warnings.catch_warnings():
        # Ragged or too-deep lists become object arrays (refused below), not warnings in the log.
        warnings.simplefilter("ignore")
        return np.array(value)


def _csv_array(data):
    text = data if isinstance(data, str) else data.decode("utf-8")
    if not text.strip():
        raise BadRequest(f"the {CSV} body is empty")
    # numpy's C reader (1.23+): several times faster than genfromtxt, which matters when a
    # batch transform sends megabytes of rows per request.
    arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    if arr.size and np.isnan(arr).any():
        raise ValueError("a field is not a number")
    return arr


def _npy_array(data):
    raw = data if isinstance(data, (bytes, bytearray)) else data.encode("latin-1")
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"NPY format version {version[0]}.{version[1]} is not supported")
    if dtype.hasobject:
        # Unlike the toolkit, pickled objects are refused: a request must not run code.
        raise ValueError("arrays of Python objects are not accepted")
    # The header is checked against the bytes that follow before anything is allocated: a
    # header may claim any size.
    claimed = math.prod(shape) * dtype.itemsize
    present = len(raw) - f.tell()
    if claimed != present:
        raise ValueError(
            f"the header describes a {dtype} array of shape {shape} ({claimed} bytes) "
            f"but {present} bytes of data follow it"
        )
    return np.load(io.BytesIO(raw), allow_pickle=False)


def choose_accept(accept, supported):
    """The first type of the Accept header the defaults can produce (`*/*` or none means the
    default accept type). Parameters such as `;q=0.9` are ignored."""
    if not accept or accept.strip() == "*/*":
        accept = default_accept()
    wanted = [part.split(";")[0].strip() for part in accept.split(",")]
    for t in wanted:
        if t == "*/*":
            t = default_accept()
        if t in supported:
            return t
    raise UnsupportedAccept(
        f"Accept {accept!r} is not supported by the default output_fn; "
        f"ask for one of {', '.join(supported)} or provide your own output_fn"
    )


def encode(array, accept):
    """Bytes of a numpy array in the `accept` type (already chosen from the supported ones)."""
    if accept == JSON:
        return json.dumps(array.tolist()).encode()
    if accept == CSV:
        out = io.StringIO()
        # The toolkit writes the array's tolist(), so values print as Python floats.
        np.savetxt(out, np.array(array.tolist()), delimiter=",", fmt="%s")
        return out.getvalue().encode()
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
