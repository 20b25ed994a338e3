"""A legacy (MXNet 1.2) training script in the shape of the SDK v1 documentation: imported,
its train() called with the legacy keyword arguments, the Module it returns saved by the
platform's default save."""
import os

import mxnet as mx
import numpy as np


def create_graph():
    data = mx.sym.Variable("data")
    net = mx.sym.Flatten(data)
    net = mx.sym.FullyConnected(net, num_hidden=64)
    net = mx.sym.Activation(net, act_type="relu")
    net = mx.sym.FullyConnected(net, num_hidden=10)
    return mx.sym.SoftmaxOutput(net, name="softmax")


def load(channel_dir, batch_size, shuffle):
    x = np.load(os.path.join(channel_dir, "images.npy"))
    y = np.load(os.path.join(channel_dir, "labels.npy"))
    return mx.io.NDArrayIter(x, y, batch_size=batch_size, shuffle=shuffle, label_name="softmax_label")


def train(hyperparameters, input_data_config, channel_input_dirs, output_data_dir,
          num_gpus, num_cpus, hosts, current_host, **kwargs):
    ctx = mx.cpu() if not num_gpus else [mx.gpu(i) for i in range(num_gpus)]
    batch_size = hyperparameters.get("batch_size", 100)
    train_iter = load(channel_input_dirs["train"], batch_size, True)
    test_iter = load(channel_input_dirs["test"], batch_size, False)
    mod = mx.mod.Module(symbol=create_graph(), context=ctx)
    mod.fit(train_iter, eval_data=test_iter, num_epoch=hyperparameters.get("epochs", 2),
            optimizer="sgd", optimizer_params={"learning_rate": hyperparameters.get("learning_rate", 0.1)},
            initializer=mx.init.Xavier(), eval_metric="acc")
    print("legacy test accuracy: %.4f" % mod.score(test_iter, "acc")[0][1])
    # Return the Module object. SageMaker will save this.
    return mod
