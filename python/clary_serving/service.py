"""The handler chain of the SageMaker MXNet serving containers: the user's module (model_fn,
input_fn, predict_fn, output_fn or transform_fn, with the legacy signatures for MXNet <= 1.2)
over the toolkit's defaults. When every handler is a default, queued requests are fused into
one forward pass."""

import importlib
import inspect
import os
import re
import sys
import traceback

import numpy as np

from . import codecs, mxnet_defaults as defaults
from .errors import InferenceError

HOOKS = (
    "model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn",
    "process_request_fn", "pre_model_fn", "model_warmup_fn",
)


class Request:
    __slots__ = ("body", "content_type", "accept", "custom_attributes", "shape")

    def __init__(self, body, content_type, accept, custom_attributes, shape=None):
        self.body = body
        self.content_type = content_type or codecs.JSON
        self.accept = accept
        self.custom_attributes = custom_attributes
        # A CSV body the model server already read: little-endian f64 values of this shape.
        self.shape = shape


class _RequestProperties:
    def __init__(self, request):
        self._headers = {"Content-Type": request.content_type}
        if request.accept:
            self._headers["Accept"] = request.accept
        if request.custom_attributes is not None:
            self._headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes

    def get_request_properties(self):
        return dict(self._headers)


class Context:
    """Given to a handler that takes one trailing parameter more than the toolkit passes, as
    sagemaker-inference >= 1.7 does. It carries the request's custom attributes and lets the
    handler set the response's."""

    def __init__(self, request, model_dir):
        self.system_properties = {"model_dir": model_dir}
        self.custom_attributes = request.custom_attributes
        self.response_custom_attributes = None
        self.request_processor = [_RequestProperties(request)]

    def set_response_custom_attributes(self, value):
        self.response_custom_attributes = str(value)


def _positional_count(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _call(fn, args, context):
    if context is not None and _positional_count(fn) == len(args) + 1:
        return fn(*args, context)
    return fn(*args)


def _import_user_module(code_dirs):
    """The user's inference module: SAGEMAKER_PROGRAM (or inference.py) at the top of a code
    directory, or else the one file of that name in their subfolders (the SDK names a training
    entry point from a subfolder of source_dir by its file name alone). Absent or ambiguous, it
    is ProgramNotFound: as on SageMaker, the container starts and invocations fail.
    Without SAGEMAKER_PROGRAM and inference.py, the default handlers serve."""
    program = os.environ.get("SAGEMAKER_PROGRAM")
    code_dirs = [d for d in code_dirs if d]
    rel = program or "inference.py"
    rel = rel[:-3] if rel.endswith(".py") else rel
    folder, name = os.path.split(rel.strip("/"))
    for d in reversed(code_dirs):
        if d not in sys.path:
            sys.path.insert(0, d)
    found = any(
        os.path.exists(os.path.join(d, folder, name + ".py")) or os.path.isdir(os.path.join(d, folder, name))
        for d in code_dirs
    )
    if found and folder:
        # A program named with its folder (`sub/entry.py`) is imported from that folder.
        for d in code_dirs:
            if os.path.isdir(os.path.join(d, folder)):
                sys.path.insert(0, os.path.join(d, folder))
                break
    if not found and program:
        hits = _files_named(name + ".py", code_dirs)
        if len(hits) == 1:
            where, shown = hits[0]
            print(f"SAGEMAKER_PROGRAM {program!r} is not at the top of the model's code; "
                  f"using {shown}, the only file of that name in it", file=sys.stderr, flush=True)
            sys.path.insert(0, os.path.dirname(where))
            found = True
        else:
            why = ("several files have that name: " + ", ".join(shown for _, shown in hits)
                   if hits else "no file of that name is in it or its folders")
            raise ProgramNotFound(
                f"SAGEMAKER_PROGRAM {program!r} was not found at the top of the model's code and "
                f"{why}; package it as code/{name}.py in model.tar.gz", status=503)
    if not found:
        print(f"No inference module {name}.py in the model's code; using the default handlers",
              file=sys.stderr)
        return None
    return importlib.import_module(name)


class ProgramNotFound(InferenceError):
    """The user's module cannot be imported; every invocation answers this."""


def _files_named(filename, code_dirs):
    """(path, path as shown in the log) of every `filename` below the code directories' tops."""
    hits = []
    for d in code_dirs:
        for root, dirs, files in os.walk(d):
            dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__")
            if root != d and filename in files:
                path = os.path.join(root, filename)
                shown = os.path.join(os.path.basename(d.rstrip("/")), os.path.relpath(path, d))
                hits.append((path, shown))
    return hits


class ModelService:
    def __init__(self, model_dir, code_dirs, legacy):
        self.model_dir = model_dir
        self.legacy = legacy
        self.missing = None
        try:
            module = _import_user_module(code_dirs)
        except ProgramNotFound as e:
            # SageMaker's container starts without the module and fails each request; the same
            # here, with the reason in the log and in every answer.
            print(f"{e}; every invocation will answer 503", file=sys.stderr, flush=True)
            self.missing, self.user, self.model, self.kind = e, {}, None, "other"
            self.fused, self.runner = False, None
            return
        self.user = {h: getattr(module, h) for h in HOOKS if callable(getattr(module, h, None))}
        chain = [h for h in ("input_fn", "predict_fn", "output_fn") if h in self.user]
        if "transform_fn" in self.user and chain:
            raise ValueError(
                f"transform_fn cannot be defined together with {', '.join(chain)}; "
                "define either transform_fn or the input_fn/predict_fn/output_fn chain"
            )
        if "pre_model_fn" in self.user:
            self.user["pre_model_fn"](model_dir)
        self.model = self.user.get("model_fn", defaults.default_model_fn)(model_dir)
        if "model_warmup_fn" in self.user:
            self.user["model_warmup_fn"](model_dir, self.model)
        self.kind = defaults.model_kind(self.model)
        if self.kind == "other" and not any(
            h in self.user for h in ("transform_fn", "predict_fn", "process_request_fn")
        ):
            raise ValueError(
                f"Unsupported model type: {type(self.model).__name__}. model_fn must return an "
                "MXNet Module or Gluon Block, or implement transform_fn or predict_fn"
            )
        if self.kind == "module":
            self.types = defaults.LEGACY_MODULE_TYPES if legacy else defaults.MODULE_TYPES
        else:
            self.types = defaults.LEGACY_GLUON_TYPES if legacy else defaults.GLUON_TYPES
        self.fused = self.kind in ("module", "gluon") and not any(
            h in self.user
            for h in ("input_fn", "predict_fn", "output_fn", "transform_fn", "process_request_fn")
        )
        self.runner = defaults.ModuleRunner(self.model) if self.fused and self.kind == "module" else None

    # One request through the user's chain (or the defaults).
    def _chain(self, req, ctx):
        u, model, ct, accept = self.user, self.model, req.content_type, req.accept
        data = codecs.body_for_handler(req.body, ct)
        if "transform_fn" in u:
            return _call(u["transform_fn"], (model, data, ct, accept), ctx)
        if self.legacy:
            return self._legacy_chain(data, ct, accept, ctx)
        if "input_fn" in u:
            fn = u["input_fn"]
            wants_model = self.kind == "module" and "model" in _parameter_names(fn)
            x = _call(fn, (data, ct, model) if wants_model else (data, ct), ctx)
        elif self.kind == "module":
            x = defaults.module_input_fn(data, ct, model, self.types)
        else:
            x = defaults.gluon_input_fn(data, ct, self.types)
        if "predict_fn" in u:
            pred = _call(u["predict_fn"], (x, model), ctx)
        else:
            pred = defaults.predict(x, model)
        if "output_fn" in u:
            return _call(u["output_fn"], (pred, accept), ctx)
        return defaults.output(pred, accept, self.types)

    def _legacy_chain(self, data, ct, accept, ctx):
        """MXNet <= 1.2 signatures: the model comes first in input_fn/predict_fn for Modules,
        and in predict_fn for Gluon; process_request_fn may replace input and predict."""
        u, model = self.user, self.model
        if self.kind == "module" and "process_request_fn" in u:
            pred = u["process_request_fn"](model, data, ct)
        else:
            if "input_fn" in u:
                args = (model, data, ct) if self.kind == "module" else (data, ct)
                x = u["input_fn"](*args)
            elif self.kind == "module":
                x = defaults.module_input_fn(data, ct, model, self.types)
            else:
                x = defaults.gluon_input_fn(data, ct, self.types)
            pred = u["predict_fn"](model, x) if "predict_fn" in u else defaults.predict(x, model)
        if "output_fn" in u:
            return u["output_fn"](pred, accept)
        return defaults.output(pred, accept, self.types)

    def _respond(self, result, req, ctx):
        if isinstance(result, tuple) and len(result) == 2:
            body, content_type = result
        else:
            body, content_type = result, _requested_type(req.accept)
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise InferenceError(
                f"the handler returned a {type(body).__name__}; output_fn and transform_fn must "
                "return str or bytes (optionally with a content type as a tuple)"
            )
        attrs = ctx.response_custom_attributes if ctx is not None else None
        return 200, body, str(content_type), attrs

    def handle(self, req):
        if self.missing is not None:
            return error_response(self.missing)
        ctx = Context(req, self.model_dir)
        try:
            return self._respond(self._chain(req, ctx), req, ctx)
        except Exception as e:  # the handler's failure becomes the response, not a dead worker
            return error_response(e)

    def handle_batch(self, reqs):
        if not self.fused:
            return [self.handle(r) for r in reqs]
        return self._fused(reqs)

    def _fused(self, reqs):
        """The default chain for several requests with one forward pass: each is decoded and
        checked on its own (a bad one fails alone), rows of equal shape are stacked, and the
        output split back by row counts."""
        results = [None] * len(reqs)
        ready = []  # (index, rows, accept)
        for i, r in enumerate(reqs):
            try:
                if r.shape is not None:
                    arr = np.frombuffer(r.body, dtype="<f8").reshape(r.shape)
                else:
                    arr = codecs.decode(codecs.body_for_handler(r.body, r.content_type), r.content_type, self.types)
                if self.runner is not None:
                    if r.content_type == codecs.CSV:
                        arr = defaults.csv_rows(arr, self.runner.data_shape)
                    arr = self.runner.rows(arr)
                accept = codecs.choose_accept(r.accept, self.types)
                ready.append((i, arr, accept))
            except Exception as e:
                results[i] = error_response(e)
        groups = {}
        for item in ready:
            arr = item[1]
            # Gluon inputs without a batch dimension are run alone, as the toolkit would.
            key = (arr.shape[1:], arr.dtype.kind) if arr.ndim >= 2 else ("alone", item[0])
            groups.setdefault(key, []).append(item)
        for items in groups.values():
            try:
                stacked = items[0][1] if len(items) == 1 else np.concatenate([a for _, a, _ in items])
                if self.runner is not None:
                    out = self.runner.forward(stacked)
                else:
                    out = self.model(defaults.gluon_input_array(stacked))
                out = defaults.to_numpy(out)
                if len(items) > 1 and out.shape[:1] != stacked.shape[:1]:
                    raise InferenceError("the model's output does not have one row per input row")
                offset = 0
                for i, arr, accept in items:
                    n = arr.shape[0] if len(items) > 1 else None
                    part = out[offset:offset + n] if n is not None else out
                    offset += n or 0
                    results[i] = (200, codecs.encode(part, accept), accept, None)
            except Exception as e:
                for i, _, _ in items:
                    results[i] = error_response(e)
        return results


def _parameter_names(fn):
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _requested_type(accept):
    if not accept or accept.strip() == "*/*":
        return codecs.default_accept()
    first = accept.split(",")[0].split(";")[0].strip()
    return codecs.default_accept() if first == "*/*" else first


# An absolute path of two or more parts, not inside a word, a URL or a media type.
_PATH = re.compile(r"(?<![\w.~:/-])(?:/[\w.@+-]+){2,}/?")


def without_paths(text):
    """`text` with the server's paths replaced: they are for the endpoint's log only."""
    return _PATH.sub("<path>", text)


def error_response(e):
    """The answer for a failed request: the exception's text with no traceback and no server
    path; the whole traceback goes to the endpoint's log."""
    if isinstance(e, InferenceError):
        return e.status, (without_paths(str(e)) + "\n").encode(), "text/plain", None
    trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    print(trace, file=sys.stderr, flush=True)
    name, text = type(e).__name__, str(e)
    if "Traceback (most recent call last)" in text:
        # MXNetError carries the C++ stack in its text; its last line is the message.
        text = [line for line in text.splitlines() if line.strip()][-1].strip()
    if not text.startswith(name + ":"):
        text = f"{name}: {text}"
    text = without_paths(text) + " (the traceback is in the endpoint's log)\n"
    return 500, text.encode(), "text/plain", None
