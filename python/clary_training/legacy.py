"""Runs a training script written for the MXNet images of framework version 1.2 and earlier:
the script is imported, its `train()` called with the nine keyword arguments of the legacy
container, and the model it returns saved (docs/contract.md §7.2, §7.3).

The agent starts this as `python -m clary_training.legacy` with the code directory as the
working directory; the parameter server is already running and the worker's DMLC_* variables
are in the environment.
"""
import importlib
import inspect
import json
import logging
import os
import sys
import traceback

logger = logging.getLogger("sagemaker_mxnet_container")

# The legacy container logged this, in yellow, before every training run.
SCRIPT_MODE_WARNING = (
    "\033[1;33m"
    "This training script uses the legacy train() structure of MXNet 1.2 and earlier images. "
    "Newer framework versions run the script as a standalone program (script mode): read the "
    "SM_* environment variables and arguments and call main logic under "
    "`if __name__ == '__main__':`. See the SageMaker Python SDK's MXNet documentation on "
    "updating a training script for script mode."
    "\033[0m"
)

KWARGS = (
    "hyperparameters",
    "input_data_config",
    "channel_input_dirs",
    "output_data_dir",
    "model_dir",
    "num_gpus",
    "num_cpus",
    "hosts",
    "current_host",
)


def _decode(value):
    """Hyperparameters arrive JSON-encoded from the SDK; tuning jobs send bare strings."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _load(path):
    with open(path) as f:
        return json.load(f)


def scheduler_host(hosts):
    """The legacy container put the scheduler on the first host in sorted order."""
    return sorted(hosts)[0]


def training_kwargs(base_dir, num_gpus, num_cpus):
    config_dir = os.path.join(base_dir, "input", "config")
    hyperparameters = {
        k: _decode(v) for k, v in _load(os.path.join(config_dir, "hyperparameters.json")).items()
    }
    resources = _load(os.path.join(config_dir, "resourceconfig.json"))
    input_data_config = _load(os.path.join(config_dir, "inputdataconfig.json"))
    hosts = resources["hosts"]
    current_host = resources["current_host"]
    data_dir = os.path.join(base_dir, "input", "data")
    output_data_dir = os.path.join(base_dir, "output", "data")
    if len(hosts) > 1:
        # Each host writes its own part of output.tar.gz's tree.
        output_data_dir = os.path.join(output_data_dir, current_host)
    os.makedirs(output_data_dir, exist_ok=True)
    return {
        "hyperparameters": hyperparameters,
        "input_data_config": input_data_config,
        "channel_input_dirs": {ch: os.path.join(data_dir, ch) for ch in input_data_config},
        "output_data_dir": output_data_dir,
        "model_dir": os.path.join(base_dir, "model"),
        "num_gpus": num_gpus,
        "num_cpus": num_cpus,
        "hosts": hosts,
        "current_host": current_host,
    }


def accepted_kwargs(fn, kwargs):
    """All of them for `**kwargs`; otherwise only those the signature names."""
    spec = inspect.getfullargspec(fn)
    if spec.varkw:
        return dict(kwargs)
    names = set(spec.args) | set(spec.kwonlyargs)
    return {k: v for k, v in kwargs.items() if k in names}


def default_save(model, model_dir):
    """The three files of docs/contract.md §7.3, for a Module."""
    if not all(hasattr(model, a) for a in ("symbol", "save_params", "data_shapes")):
        raise TypeError(
            "train() returned a %s, which the default save cannot write (it saves MXNet "
            "Modules); define save(model, model_dir) in the training script to save it"
            % type(model).__name__
        )
    model.symbol.save(os.path.join(model_dir, "model-symbol.json"))
    model.save_params(os.path.join(model_dir, "model-0000.params"))
    shapes = [{"name": d.name, "shape": list(d.shape)} for d in model.data_shapes]
    with open(os.path.join(model_dir, "model-shapes.json"), "w") as f:
        json.dump(shapes, f)


def run(base_dir, program, num_gpus, num_cpus):
    kwargs = training_kwargs(base_dir, num_gpus, num_cpus)
    logger.warning(SCRIPT_MODE_WARNING)
    code_dir = os.path.join(base_dir, "code")
    sys.path.insert(0, code_dir)
    module_name = program[:-3] if program.endswith(".py") else program
    module = importlib.import_module(module_name)
    if not callable(getattr(module, "train", None)):
        raise AttributeError(
            "%s has no train() function: MXNet 1.2 and earlier call train(**kwargs); use "
            "framework_version 1.3.0 or later to run a standalone script" % program
        )
    model = module.train(**accepted_kwargs(module.train, kwargs))
    if model:
        hosts, current = kwargs["hosts"], kwargs["current_host"]
        if hasattr(module, "save"):
            module.save(model, kwargs["model_dir"])
        elif len(hosts) == 1 or current == scheduler_host(hosts):
            default_save(model, kwargs["model_dir"])


def main():
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)-12s %(levelname)-8s %(message)s"
    )
    base_dir = os.environ["SAGEMAKER_BASE_DIR"]
    output_dir = os.path.join(base_dir, "output")
    try:
        hps = _load(os.path.join(base_dir, "input", "config", "hyperparameters.json"))
        program = os.environ.get("SAGEMAKER_PROGRAM") or _decode(hps["sagemaker_program"])
        run(
            base_dir,
            program,
            int(os.environ.get("SM_NUM_GPUS", "0")),
            int(os.environ.get("SM_NUM_CPUS", str(os.cpu_count() or 1))),
        )
    except Exception as e:  # noqa: BLE001 - every failure becomes the job's failure reason
        trace = traceback.format_exc()
        logger.error(trace)
        with open(os.path.join(output_dir, "failure"), "a") as f:
            f.write("Exception caught in training: %s\n%s" % (e, trace))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    open(os.path.join(output_dir, "success"), "a").close()
    sys.stdout.flush()
    sys.stderr.flush()
    # As the legacy container: threads the script left running (the kvstore's) end with it.
    os._exit(0)


if __name__ == "__main__":
    main()
