"""Decoding request bodies into numpy arrays and encoding predictions, as the MXNet serving
toolkit's default handlers do (JSON, CSV, NPY), with honest errors instead of its blanket 500s."""

import io
import json
import os

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
    """A numpy array from a request body (text or bytes) of one of the `supported` types."""
    if content_type not in supported:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported by the default input_fn; "
            f"send one of {', '.join(supported)} or provide your own input_fn"
        )
    try:
        if content_type == JSON:
            return np.array(json.loads(data))
        if content_type == CSV:
            text = data if isinstance(data, str) else data.decode("utf-8")
            arr = np.genfromtxt(io.StringIO(text), delimiter=",")
            if arr.size and np.isnan(arr).any():
                raise ValueError("a field is not a number")
            return arr
        raw = data if isinstance(data, (bytes, bytearray)) else data.encode("latin-1")
        # Unlike the toolkit, pickled objects are refused: a request must not run code.
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, TypeError, OSError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid {content_type}: {e}")


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
