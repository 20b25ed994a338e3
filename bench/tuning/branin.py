"""The training script bench/tuning uploads: its objective is the Branin function of its two
hyperparameters (x1 in [-5, 10], x2 in [0, 15]; minimised; global minimum 0.397887 at three
points), printed once per epoch as `epoch=<i> objective=<value>` so early stopping has a
curve to cut. The value at epoch i of E is branin(x1, x2) + OFFSET * (E - i) / E: it falls
linearly to the final value, so every epoch is worse than the end (a stopped trial never looks
better than it would have finished) and trials keep their order at every epoch (an early
stopping rule that keeps the best trials at each rung never cuts the eventual best).
Each epoch sleeps --epoch-seconds; there is no other work.

    python branin.py --x1 3.14 --x2 2.27 [--epochs 9] [--epoch-seconds 0.1]
"""
import argparse
import math
import time

OFFSET = 100.0


def branin(x1, x2):
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--x1", type=float, required=True)
    p.add_argument("--x2", type=float, required=True)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--epoch-seconds", type=float, default=0.1)
    args, _ = p.parse_known_args()
    final = branin(args.x1, args.x2)
    for i in range(1, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        value = final + OFFSET * (args.epochs - i) / args.epochs
        print("epoch=%d objective=%.6f" % (i, value), flush=True)


if __name__ == "__main__":
    main()
