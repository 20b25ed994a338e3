"""A user inference script for MXNetModel: the default Module loader, a custom output."""
import json


def output_fn(prediction, accept):
    return json.dumps({"classes": prediction.asnumpy().argmax(axis=1).tolist()}), "application/json"
