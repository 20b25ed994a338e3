"""The MXNet serving toolkit's default handlers: the Module loader, and input/predict/output for
Module and Gluon models. The forward pass runs through a CachedOp built once from the Module's
symbol, so any number of rows (and several requests fused into one batch) share one graph
without rebinding; results equal `Module.predict`'s."""

import json
import os

import mxnet as mx
import numpy as np

from . import codecs
from .errors import BadRequest, InferenceError

MODULE_TYPES = (codecs.JSON, codecs.CSV, codecs.NPY)
GLUON_TYPES = (codecs.JSON, codecs.NPY)
# The legacy (MXNet <= 1.2) defaults knew JSON and CSV for Modules, JSON for Gluon.
LEGACY_MODULE_TYPES = (codecs.JSON, codecs.CSV)
LEGACY_GLUON_TYPES = (codecs.JSON,)


def first_dimension():
    try:
        return int(os.environ.get("SAGEMAKER_DEFAULT_MODEL_FIRST_DIMENSION_SIZE") or 1)
    except ValueError:
        return 1


def _load_params(model_dir):
    """`model-0000.params` as the toolkit writes it, or `model.params` as its docs say."""
    numbered = os.path.join(model_dir, "model-0000.params")
    plain = os.path.join(model_dir, "model.params")
    path = numbered if os.path.exists(numbered) else plain
    if not os.path.exists(path):
        raise ValueError(
            "Failed to load model with default model_fn: missing file model-0000.params "
            f"(or model.params) in {model_dir}"
        )
    args, aux = {}, {}
    for name, value in mx.nd.load(path).items():
        kind, _, key = name.partition(":")
        if kind == "arg":
            args[key] = value
        elif kind == "aux":
            aux[key] = value
        else:
            args[name] = value
    return args, aux


def default_model_fn(model_dir):
    """A Module from model-symbol.json, the params and model-shapes.json, bound for inference
    with batch size 1 (or SAGEMAKER_DEFAULT_MODEL_FIRST_DIMENSION_SIZE), on the CPU unless an
    Elastic Inference accelerator is present, as the toolkit does."""
    for name in ("model-symbol.json", "model-shapes.json"):
        if not os.path.exists(os.path.join(model_dir, name)):
            raise ValueError(
                f"Failed to load model with default model_fn: missing file {name} in {model_dir}"
            )
    with open(os.path.join(model_dir, "model-shapes.json")) as f:
        shapes = json.load(f)
    batch = first_dimension()
    data_shapes = []
    for s in shapes:
        shape = list(s["shape"])
        if shape:
            shape[0] = batch
        data_shapes.append((s["name"], tuple(shape)))
    sym = mx.sym.load(os.path.join(model_dir, "model-symbol.json"))
    args, aux = _load_params(model_dir)
    ctx = mx.cpu()
    if os.environ.get("SAGEMAKER_INFERENCE_ACCELERATOR_PRESENT") == "true":
        ctx = mx.eia()
    mod = mx.mod.Module(symbol=sym, context=ctx, data_names=[n for n, _ in data_shapes], label_names=None)
    mod.bind(for_training=False, data_shapes=data_shapes)
    mod.set_params(args, aux, allow_missing=True)
    return mod


def model_kind(model):
    if isinstance(model, mx.module.BaseModule):
        return "module"
    if isinstance(model, mx.gluon.Block):
        return "gluon"
    return "other"


def fit_rows(array, data_shape, data_name):
    """Checks an input's trailing shape against the model's; one sample may omit the batch
    dimension."""
    want = tuple(data_shape[1:])
    if array.ndim and array.shape[0] == 0:
        raise BadRequest("the request holds no input rows")
    if tuple(array.shape[1:]) == want:
        return array
    if tuple(array.shape) == want:
        return array.reshape((1,) + want)
    raise BadRequest(
        f"input of shape {tuple(array.shape)} does not fit the model's input "
        f"{data_name} of shape (batch,) + {want}"
    )


def csv_rows(array, data_shape):
    """CSV values as rows of the model's input shape."""
    want = tuple(data_shape[1:])
    try:
        return array.reshape((-1,) + want)
    except ValueError:
        raise BadRequest(
            f"{array.size} CSV values do not make whole rows of the model's input shape "
            f"(batch,) + {want}"
        ) from None


class ModuleRunner:
    """Forward passes of a bound Module's symbol for any batch size, through one CachedOp."""

    def __init__(self, module):
        if len(module.data_names) != 1:
            raise InferenceError(
                f"the default handlers need a model with exactly one input; this one has {module.data_names}"
            )
        self.data_name = module.data_names[0]
        self.data_shape = tuple(module.data_shapes[0].shape)
        arg, aux = module.get_params()
        # A Module bound without label names keeps a loss layer's label (`softmax_label`) among
        # its parameters, sized for the bound batch; it is filled per batch size instead.
        self.params = {k: v for k, v in {**arg, **aux}.items() if not k.endswith("_label")}
        self.symbol = module.symbol
        self.inputs = self.symbol.list_inputs()
        self.op = mx.nd.CachedOp(self.symbol)
        self._fillers = {}

    def _filler(self, name, batch_shape):
        """Inputs that are neither data nor parameters (a loss layer's label) get zeros."""
        key = (name, batch_shape)
        if key not in self._fillers:
            arg_shapes, _, aux_shapes = self.symbol.infer_shape(**{self.data_name: batch_shape})
            names = self.symbol.list_arguments() + self.symbol.list_auxiliary_states()
            shapes = dict(zip(names, arg_shapes + aux_shapes))
            self._fillers[key] = mx.nd.zeros(shapes[name])
        return self._fillers[key]

    def rows(self, array):
        return fit_rows(array, self.data_shape, self.data_name)

    def forward(self, array):
        data = mx.nd.array(array)
        args = []
        for name in self.inputs:
            if name == self.data_name:
                args.append(data)
            elif name in self.params:
                args.append(self.params[name])
            else:
                args.append(self._filler(name, data.shape))
        out = self.op(*args)
        return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out


def module_input_fn(data, content_type, model, types=MODULE_TYPES):
    """The toolkit's default Module input: an NDArrayIter over the rows, padded to the bound
    batch size (without the toolkit's extra whole batch when rows divide evenly)."""
    array = codecs.decode(data, content_type, types)
    (name, shape) = model.data_shapes[0]
    if content_type == codecs.CSV:
        array = csv_rows(array, shape)
    array = fit_rows(array, shape, name)
    batch = shape[0]
    pad = (-array.shape[0]) % batch if batch > 1 else 0
    it = mx.io.NDArrayIter(mx.nd.array(array), batch_size=batch, last_batch_handle="pad")
    it.getpad = lambda: pad
    return it


def gluon_input_fn(data, content_type, types=GLUON_TYPES):
    return mx.nd.array(codecs.decode(data, content_type, types)).as_in_context(mx.cpu())


def predict(data, model):
    """Default predict_fn for either model kind."""
    if isinstance(model, mx.module.BaseModule):
        if isinstance(data, mx.io.DataIter):
            return model.predict(data)
        return model.predict(data if isinstance(data, mx.nd.NDArray) else mx.nd.array(data))
    return model(data)


def to_numpy(prediction):
    if isinstance(prediction, (list, tuple)):
        if len(prediction) == 1:
            return to_numpy(prediction[0])
        raise InferenceError(
            "the model has several outputs; the default output_fn encodes one, so provide an output_fn"
        )
    if isinstance(prediction, mx.nd.NDArray):
        return prediction.asnumpy()
    return np.asarray(prediction)


def output(prediction, accept, types):
    """Default output_fn: (body, content type actually produced)."""
    chosen = codecs.choose_accept(accept, types)
    return codecs.encode(to_numpy(prediction), chosen), chosen


def gluon_input_array(array):
    return mx.nd.array(array).as_in_context(mx.cpu())
