#!/usr/bin/env python3
"""Vendors the part of botocore's SageMaker service model that Clary serves: the operations
below and every shape they reach, into crates/clary-api/botocore/sagemaker-subset.json. The
API's unit tests check Clary's enums, names and limits against it.

Run with a Python that has botocore (the test environment does):
    ~/.cache/clary-test-venv/bin/python scripts/vendor-botocore.py
"""
import gzip
import json
import os

import botocore

OPERATIONS = [
    "CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "StopTrainingJob", "UpdateTrainingJob",
    "CreateModel", "DescribeModel", "ListModels", "DeleteModel",
    "CreateEndpointConfig", "DescribeEndpointConfig", "ListEndpointConfigs", "DeleteEndpointConfig",
    "CreateEndpoint", "UpdateEndpoint", "DescribeEndpoint", "ListEndpoints", "DeleteEndpoint",
    "AddTags", "ListTags", "DeleteTags", "ListMonitoringSchedules",
    "CreateHyperParameterTuningJob", "DescribeHyperParameterTuningJob", "ListHyperParameterTuningJobs",
    "ListTrainingJobsForHyperParameterTuningJob", "StopHyperParameterTuningJob",
    "CreateProcessingJob", "DescribeProcessingJob", "ListProcessingJobs", "StopProcessingJob",
]


def main():
    root = os.path.join(os.path.dirname(botocore.__file__), "data", "sagemaker")
    version = sorted(os.listdir(root))[-1]
    with gzip.open(os.path.join(root, version, "service-2.json.gz")) as f:
        model = json.load(f)
    shapes = model["shapes"]
    keep, todo = {}, []
    for op in OPERATIONS:
        o = model["operations"][op]
        todo += [o[k]["shape"] for k in ("input", "output") if k in o]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        shape = dict(shapes[name])
        shape.pop("documentation", None)
        keep[name] = shape
        for member in shape.get("members", {}).values():
            member.pop("documentation", None)
            todo.append(member["shape"])
        for key in ("member", "key", "value"):
            if key in shape:
                todo.append(shape[key]["shape"])
    operations = {}
    for op in OPERATIONS:
        o = {k: v for k, v in model["operations"][op].items() if k in ("name", "http", "input", "output", "errors")}
        operations[op] = o
    out = {
        "source": "botocore %s, data/sagemaker/%s/service-2.json.gz (a subset: the operations Clary serves and the shapes they reach)" % (botocore.__version__, version),
        "metadata": {k: model["metadata"][k] for k in ("apiVersion", "protocol", "targetPrefix", "jsonVersion")},
        "operations": operations,
        "shapes": dict(sorted(keep.items())),
    }
    dest = os.path.join(os.path.dirname(__file__), "..", "crates", "clary-api", "botocore", "sagemaker-subset.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1, sort_keys=False)
        f.write("\n")
    print("wrote %d operations and %d shapes to %s" % (len(operations), len(keep), os.path.normpath(dest)))


if __name__ == "__main__":
    main()
