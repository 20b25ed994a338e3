"""The SDK v3 tests' training script, run by ModelTrainer's drivers (sm_train.sh, then the basic
script driver) through the job's ContainerEntrypoint. It prints what a container sees, as one
`V3-FACTS` JSON line, writes to /opt/ml by its hard-coded paths, then trains the example's MNIST
model (examples/mnist/train.py, copied beside it as mnist_train.py) with the hyperparameters the
driver passed as arguments."""
import json
import os
import runpy
import shutil
import sys

import tabulate  # from requirements.txt: installed by the SDK's driver with the job's pip

with open("/opt/ml/input/config/hyperparameters.json") as f:
    hps = json.load(f)
facts = {
    "argv": sys.argv[1:],
    "python": sys.executable,
    "python3_on_path": shutil.which("python3"),
    "pip_on_path": shutil.which("pip"),
    "tabulate_from": os.path.dirname(tabulate.__file__),
    "hyperparameters_json": hps,
    "resource_config": json.load(open("/opt/ml/input/config/resourceconfig.json")),
    "channels": {c: sorted(os.listdir("/opt/ml/input/data/" + c)) for c in os.listdir("/opt/ml/input/data")},
    "driver_mode": oct(os.stat("/opt/ml/input/data/sm_drivers/sm_train.sh").st_mode & 0o777),
    "cwd": os.getcwd(),
    "sm_model_dir": os.environ.get("SM_MODEL_DIR"),
    "job_name": os.environ.get("TRAINING_JOB_NAME"),
}
print("V3-FACTS " + json.dumps(facts), flush=True)
if json.loads(hps.get("fail", "false")):
    # As SageMaker scripts do: the failure file becomes the job's FailureReason.
    with open("/opt/ml/output/failure", "w") as f:
        f.write("deliberate failure requested by the hyperparameters")
    sys.exit(3)
with open("/opt/ml/model/written-at-opt-ml.txt", "w") as f:
    f.write("hard-coded /opt/ml path")
sys.argv = ["mnist_train.py"] + sys.argv[1:]
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_train.py"), run_name="__main__")
