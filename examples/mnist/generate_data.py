"""Writes a small MNIST-shaped data set (28x28 grey images, 10 classes) for the example.

No download: each class is a fixed random stroke pattern, and each sample is its class's
pattern with noise and a small shift, so a model can really learn it. Deterministic (seeded).

    python generate_data.py [OUT_DIR] [--train N] [--test N]
"""
import argparse
import os

import numpy as np


def make(n, rng, patterns):
    labels = rng.integers(0, 10, size=n)
    images = np.empty((n, 1, 28, 28), dtype=np.float32)
    for i, y in enumerate(labels):
        img = np.roll(patterns[y], shift=(rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
        images[i, 0] = np.clip(img + rng.normal(0, 0.25, size=(28, 28)), 0, 1)
    return images, labels.astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=500)
    a = p.parse_args()
    rng = np.random.default_rng(1234)
    patterns = (rng.random((10, 28, 28)) > 0.8).astype(np.float32)
    for split, n in (("train", a.train), ("test", a.test)):
        d = os.path.join(a.out, split)
        os.makedirs(d, exist_ok=True)
        x, y = make(n, rng, patterns)
        np.save(os.path.join(d, "images.npy"), x)
        np.save(os.path.join(d, "labels.npy"), y)
        print("wrote %d %s samples to %s" % (n, split, d))


if __name__ == "__main__":
    main()
