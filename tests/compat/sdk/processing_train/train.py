"""Trains on what the processing job wrote: a linear fit of y on x with MXNet Gluon."""
import json
import os

import mxnet as mx
from mxnet import autograd, gluon

data = mx.nd.load(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "data.nd"))["data"]
x, y = data[:, 0:1], data[:, 1:2]
net = gluon.nn.Dense(1)
net.initialize(mx.init.Zero())
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
loss_fn = gluon.loss.L2Loss()
for _ in range(300):
    with autograd.record():
        loss = loss_fn(net(x), y)
    loss.backward()
    trainer.step(x.shape[0])
w = float(net.weight.data().asscalar())
print("FIT " + json.dumps({"rows": int(x.shape[0]), "weight": w}), flush=True)
net.save_parameters(os.path.join(os.environ["SM_MODEL_DIR"], "model.params"))
