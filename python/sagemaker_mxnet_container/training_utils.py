"""What `sagemaker_mxnet_container.training_utils` offers training scripts in AWS's MXNet
images: `scheduler_host` and `save`, with the same arguments and behaviour
(docs/contract.md §7.1, §7.3).
"""
import json
import os


def scheduler_host(hosts):
    """The parameter-server scheduler host: the first host, in resourceconfig order."""
    return hosts[0]


def save(model_dir, model, current_host=None, hosts=None):
    """Saves a Module as model-symbol.json, model-0000.params and model-shapes.json, only on
    the scheduler host (so multi-host jobs write one copy)."""
    current_host = current_host or os.environ["SM_CURRENT_HOST"]
    hosts = hosts or json.loads(os.environ["SM_HOSTS"])
    if current_host != scheduler_host(hosts):
        return
    model.symbol.save(os.path.join(model_dir, "model-symbol.json"))
    model.save_params(os.path.join(model_dir, "model-0000.params"))
    shapes = [{"name": d.name, "shape": list(d.shape)} for d in model.data_shapes]
    with open(os.path.join(model_dir, "model-shapes.json"), "w") as f:
        json.dump(shapes, f)
