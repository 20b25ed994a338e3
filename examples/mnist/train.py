"""A Gluon MLP trained the SageMaker way: hyperparameters as arguments, data and model
directories from SM_* variables, the model saved to SM_MODEL_DIR so it can be hosted."""
import argparse
import json
import logging
import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

logging.basicConfig(level=logging.INFO)


def load(channel_dir):
    x = np.load(os.path.join(channel_dir, "images.npy"))
    y = np.load(os.path.join(channel_dir, "labels.npy"))
    return gluon.data.ArrayDataset(mx.nd.array(x), mx.nd.array(y))


def build():
    net = gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(gluon.nn.Dense(128, activation="relu"))
        net.add(gluon.nn.Dense(64, activation="relu"))
        net.add(gluon.nn.Dense(10))
    return net


def evaluate(net, data):
    metric = mx.metric.Accuracy()
    for x, y in data:
        metric.update([y], [net(x)])
    return metric.get()[1]


def save(net, model_dir):
    # model-symbol.json + model-0000.params + model-shapes.json: what the MXNet serving
    # container's default model_fn loads.
    net.export(os.path.join(model_dir, "model"), epoch=0)
    with open(os.path.join(model_dir, "model-shapes.json"), "w") as f:
        json.dump([{"name": "data", "shape": [1, 1, 28, 28]}], f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    # "dist_sync" trains across the job's hosts through the parameter server
    # (distribution={"parameter_server": {"enabled": True}}).
    parser.add_argument("--kvstore", type=str, default="device")
    parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--test", type=str, default=os.environ.get("SM_CHANNEL_TEST"))
    args, _ = parser.parse_known_args()

    mx.random.seed(42)
    np.random.seed(42)  # DataLoader shuffles with numpy's generator
    train = gluon.data.DataLoader(load(args.train), batch_size=args.batch_size, shuffle=True)
    test = gluon.data.DataLoader(load(args.test), batch_size=args.batch_size)
    net = build()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    kvstore = mx.kv.create(args.kvstore)
    if args.kvstore.startswith("dist"):
        print("kvstore %s: num_workers %d, rank %d, host %s" % (
            kvstore.type, kvstore.num_workers, kvstore.rank, os.environ.get("SM_CURRENT_HOST")))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": args.learning_rate, "momentum": 0.9},
                            kvstore=kvstore)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for epoch in range(args.epochs):
        total = 0.0
        for x, y in train:
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(x.shape[0])
            total += loss.mean().asscalar()
        print("epoch %d: loss %.4f, test accuracy %.4f" % (epoch, total / len(train), evaluate(net, test)))
    accuracy = evaluate(net, test)
    print("final test accuracy: %.4f" % accuracy)
    save(net, args.model_dir)
    with open(os.path.join(os.environ.get("SM_OUTPUT_DATA_DIR", "."), "metrics.json"), "w") as f:
        json.dump({"test_accuracy": accuracy}, f)
