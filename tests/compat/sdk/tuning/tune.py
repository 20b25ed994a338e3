"""A training script whose validation accuracy is a known function of its hyperparameters,
printed once per epoch as a Gluon script prints it, so tuning has a real objective to find. As an
inference script (the tuner's deploy), it serves the hyperparameters it was trained with."""
import argparse
import json
import math
import os
import time


def model_fn(model_dir):
    with open(os.path.join(model_dir, "trained.json")) as f:
        return json.load(f)


def transform_fn(model, data, content_type, accept):
    return json.dumps({"trained_with": model, "input": json.loads(data)}), "application/json"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--act", default="relu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-seconds", type=float, default=0.3)
    args, _ = p.parse_known_args()

    # Best at lr = 0.01, layers = 3, act = relu: 0.95.
    final = (0.95 - 0.15 * (math.log10(args.lr) + 2) ** 2 - 0.05 * abs(args.layers - 3)
             - (0.0 if args.act == "relu" else 0.1))
    for epoch in range(args.epochs):
        time.sleep(args.epoch_seconds)
        accuracy = final * (epoch + 1) / args.epochs
        print("Epoch[%d] Validation-accuracy=%.6f" % (epoch, accuracy), flush=True)
    model_dir = os.environ.get("SM_MODEL_DIR", ".")
    with open(os.path.join(model_dir, "trained.json"), "w") as f:
        json.dump({"lr": args.lr, "layers": args.layers, "act": args.act}, f)


if __name__ == "__main__":
    main()
