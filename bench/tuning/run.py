"""bench/tuning: Clary's tuning strategies (Random, Bayesian, Hyperband) against Optuna's TPE
sampler on the Branin function, same budget, same seeds, in one run. Prints the median (over
seeds) best objective after 1/4, 1/2 and all of the trial budget (10, 20, 40 by default), the
wall time of each Clary tuning job at MaxParallelTrainingJobs=2, and the issue's two goals as
ratios.

    python3 bench/tuning/run.py [--bin BIN] [--seeds 1,2,3] [--trials 40] [--epoch-seconds 0.2] [--quick]

The binary is --bin, default $CARGO_TARGET_DIR/release/clary with
CARGO_TARGET_DIR=~/.cache/clary-target, built with `cargo build --release -p clary` when
missing. boto3 comes from the interpreter, or from ~/.cache/clary-test-venv (the script re-runs
itself there when it is missing). Optuna comes from PyPI into ~/.cache/clary-bench-optuna-venv,
created by this script when missing; TPE runs in a subprocess of that venv's Python.

What is measured. One `clary server` on a fresh data dir and a loopback port chosen by the
kernel, started with `--instance-shape ml.c5.xlarge=1:1` so that two trials fit side by side on
a small machine (otherwise the 4-vCPU instance type takes the whole machine and the queue runs
one trial at a time, whatever MaxParallelTrainingJobs says). The script uploads branin.py and,
for each seed and each strategy in turn (never two tuning jobs at once), creates a tuning job:
x1 in [-5, 10] and x2 in [0, 15] (continuous, linear), minimise `branin`, RandomSeed = seed,
MaxParallelTrainingJobs = 2, MaxNumberOfTrainingJobs = --trials, early stopping Off (Hyperband
stops trials by its own rule). Every trial is a real training job: the MXNet runtime's Python
runs branin.py, which prints `epoch=i objective=v` for i = 1..E (E = 9, rungs 1, 3, 9 for
Hyperband's eta = 3), sleeping --epoch-seconds (0.2) per epoch; v falls linearly to Branin's
value, so a trial cut early reports a worse value than it would have ended with.

Trial order is the index in the trial's name (`<job>-NNN-<hex>`, the order the strategy proposed
them); "best after k trials" is the best final objective among trials 1..k (a trial Hyperband
stopped counts with its last reported value, as SageMaker reports it). Wall time is the tuning
job's HyperParameterTuningEndTime - CreationTime, as the server records them. Each job's line
also shows the share of 2 x wall time its trials spent between TrainingStartTime and
TrainingEndTime; the rest is scheduling (launching, stopping, the gaps between trials).

The anchor and its limits. Optuna's TPESampler(seed=seed), 10 random start-up trials (its
default), run in-process on the same Branin function with the same budget, one trial after
another. It pays no per-trial process, log or metric cost and always sees every earlier result
before proposing, while Clary's Bayesian proposes with a trial still running (parallel 2): the
anchor's position is the easier one. It anchors trials-to-quality only: "Bayesian trials to reach
TPE's median best" is, for each seed, the first trial whose running best is at or below TPE's
median (over seeds) best after the full budget, the median of that over seeds, next to TPE's own
figure computed the same way (a seed that never reaches it counts as infinite). TPE's wall time
is not comparable and is not used. The wall-time goal is within Clary: Hyperband against Random,
which with the same seed propose the same configurations in the same order (Hyperband draws as
Random does), so their best objectives after k trials differ only where Hyperband cut a trial.
"At the same best objective" is, per seed, the time from job creation to the end of the trial
at which the running best (in end-time order) first reaches the worse of the two jobs' final
bests, i.e. a value both reached; the ratio Hyperband/Random of that time, and of whole-job wall
times, median over seeds. This machine's cores are shared with other work: read the load
average printed at the start and the end. Nothing is asserted; the server is stopped by PID.
"""
import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
TEST_VENV_PY = os.path.join(CACHE, "clary-test-venv", "bin", "python")
OPTUNA_VENV = os.path.join(CACHE, "clary-bench-optuna-venv")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "clary-target"))

try:
    import boto3  # noqa: F401
except ImportError:
    if os.path.exists(TEST_VENV_PY) and os.path.realpath(sys.executable) != os.path.realpath(TEST_VENV_PY):
        os.execv(TEST_VENV_PY, [TEST_VENV_PY] + sys.argv)
    sys.exit("bench/tuning needs boto3 (pip install boto3, or the test venv %s)" % TEST_VENV_PY)

sys.path.insert(0, os.path.dirname(HERE))
from clary_server import ClaryServer  # noqa: E402

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
INSTANCE = "ml.c5.xlarge"
METRIC = {"Name": "branin", "Regex": r"objective=([0-9.eE+\-]+)"}
OPTIMUM = 0.397887
STRATEGIES = ("Random", "Bayesian", "Hyperband")

TPE_CODE = r'''
import json, sys
import optuna
sys.path.insert(0, sys.argv[1])
from branin import branin
optuna.logging.set_verbosity(optuna.logging.WARNING)
seeds, trials = json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for seed in seeds:
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda t: branin(t.suggest_float("x1", -5, 10), t.suggest_float("x2", 0, 15)), n_trials=trials)
    out[seed] = [t.value for t in sorted(study.trials, key=lambda t: t.number)]
print("TPE-RESULT " + json.dumps({"version": optuna.__version__, "values": out}))
'''


def ensure_binary(path):
    if path:
        if not os.path.exists(path):
            sys.exit("--bin %s does not exist" % path)
        return os.path.abspath(path)
    path = os.path.join(TARGET, "release", "clary")
    if not os.path.exists(path):
        print("Building %s (cargo build --release -p clary)..." % path, flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "clary"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET), timeout=3600)
    return os.path.abspath(path)


def ensure_optuna():
    py = os.path.join(OPTUNA_VENV, "bin", "python")
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import optuna"], capture_output=True,
                                               timeout=120).returncode == 0
    if not ok:
        print("Installing optuna (PyPI) into %s..." % OPTUNA_VENV, flush=True)
        if not os.path.exists(py):
            subprocess.run(["python3", "-m", "venv", OPTUNA_VENV], check=True, timeout=300)
        subprocess.run([py, "-m", "pip", "install", "-q", "optuna"], check=True, timeout=900)
    return py


def run_tpe(py, seeds, trials):
    t0 = time.time()
    out = subprocess.run([py, "-c", TPE_CODE, HERE, json.dumps(seeds), str(trials)],
                         capture_output=True, text=True, timeout=1800)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("TPE-RESULT ")]
    if out.returncode != 0 or not line:
        sys.exit("optuna TPE failed (rc %d):\n%s\n%s" % (out.returncode, out.stdout, out.stderr[-3000:]))
    r = json.loads(line[0][len("TPE-RESULT "):])
    return r["version"], {int(k): v for k, v in r["values"].items()}, time.time() - t0


def code_tarball():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(os.path.join(HERE, "branin.py"), arcname="branin.py")
    return buf.getvalue()


def tuning_request(name, source, bucket, strategy, seed, trials, epochs, epoch_seconds):
    return dict(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": METRIC["Name"]},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"ContinuousParameterRanges": [
                {"Name": "x1", "MinValue": "-5", "MaxValue": "10", "ScalingType": "Linear"},
                {"Name": "x2", "MinValue": "0", "MaxValue": "15", "ScalingType": "Linear"}]},
            "TrainingJobEarlyStoppingType": "Off",
            "RandomSeed": seed,
        },
        TrainingJobDefinition={
            "StaticHyperParameters": {
                "sagemaker_program": '"branin.py"', "sagemaker_submit_directory": '"%s"' % source,
                "sagemaker_region": '"us-east-1"', "epochs": str(epochs), "epoch-seconds": str(epoch_seconds)},
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                       "MetricDefinitions": [METRIC]},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://%s/output" % bucket},
            "ResourceConfig": {"InstanceType": INSTANCE, "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        })


def ts(v):
    return v.timestamp() if hasattr(v, "timestamp") else float(v)


def run_clary_job(sm, name, request, timeout):
    sm.create_hyper_parameter_tuning_job(**request)
    deadline = time.time() + timeout
    while True:
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if d["HyperParameterTuningJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        if time.time() > deadline:
            sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
            timeout, deadline = 120, time.time() + 120
            print("    %s: still running after its timeout; stopped" % name, flush=True)
        time.sleep(0.25)
    rows, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100, **kw)
        rows += page["TrainingJobSummaries"]
        token = page.get("NextToken")
        if not token:
            break
    start = ts(d["CreationTime"])
    end = ts(d.get("HyperParameterTuningEndTime", time.time()))
    trials = []
    for r in rows:
        index = int(r["TrainingJobName"][len(name) + 1:].split("-")[0])
        metric = r.get("FinalHyperParameterTuningJobObjectiveMetric")
        value = metric["Value"] if metric and math.isfinite(metric["Value"]) else None
        ended = ts(r["TrainingEndTime"]) - start if r.get("TrainingEndTime") else None
        began = ts(r["TrainingStartTime"]) - start if r.get("TrainingStartTime") else None
        trials.append({"index": index, "value": value, "status": r["TrainingJobStatus"], "ended": ended,
                       "ran": ended - began if ended is not None and began is not None else 0.0})
    trials.sort(key=lambda t: t["index"])
    return {"status": d["HyperParameterTuningJobStatus"], "wall": end - start, "trials": trials,
            "busy": sum(t["ran"] for t in trials) / (2 * (end - start)) if end > start else math.nan,
            "failure": d.get("FailureReason")}


def running_best(values):
    best, out = math.inf, []
    for v in values:
        if v is not None and v < best:
            best = v
        out.append(best)
    return out


def best_after(values, k):
    bests = running_best(values[:k])
    return bests[-1] if bests else math.inf


def trials_to_reach(values, target):
    for i, b in enumerate(running_best(values)):
        if b <= target:
            return i + 1
    return math.inf


def time_to_reach(trials, target):
    done = sorted((t for t in trials if t["ended"] is not None), key=lambda t: t["ended"])
    best = math.inf
    for t in done:
        if t["value"] is not None and t["value"] < best:
            best = t["value"]
        if best <= target:
            return t["ended"]
    return math.inf


def median(xs):
    xs = sorted(xs)
    if not xs:
        return math.nan
    n = len(xs)
    if n % 2:
        return xs[n // 2]
    a, b = xs[n // 2 - 1], xs[n // 2]
    return a if a == b else (a + b) / 2


def fmt_count(x, budget):
    return ">%d" % budget if math.isinf(x) else ("%g" % x)


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="the clary binary (default ~/.cache/clary-target/release/clary, built if missing)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated RandomSeeds (default 1,2,3)")
    ap.add_argument("--trials", type=int, default=40, help="MaxNumberOfTrainingJobs and TPE's n_trials (default 40)")
    ap.add_argument("--epochs", type=int, default=9, help="epochs per trial (default 9: Hyperband rungs 1, 3, 9)")
    ap.add_argument("--epoch-seconds", type=float, default=0.2, help="sleep per epoch (default 0.2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: seed 1, 8 trials, 3 epochs of 0.3 s")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.trials, a.epochs, a.epoch_seconds = "1", 8, 3, 0.3
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if not seeds or a.trials < 4 or a.trials > 500:
        sys.exit("need at least one seed and 4..500 trials")
    marks = sorted({max(1, a.trials // 4), max(1, a.trials // 2), a.trials})
    binary = ensure_binary(a.bin)
    py = ensure_optuna()
    load_start = loadavg()
    print("tuning: Branin (minimise, optimum %.6f), %d trials, seeds %s, %d epochs x %.2f s per trial; "
          "Clary at MaxParallelTrainingJobs=2; %s; %d CPUs, load %s"
          % (OPTIMUM, a.trials, ",".join(map(str, seeds)), a.epochs, a.epoch_seconds, binary,
             os.cpu_count(), load_start), flush=True)

    version, tpe_values, tpe_secs = run_tpe(py, seeds, a.trials)
    print("  optuna %s TPE: %d seeds x %d trials in %.1f s (in-process)" % (version, len(seeds), a.trials, tpe_secs),
          flush=True)
    values = {"TPE (optuna)": tpe_values}
    walls, runs = {}, {}

    server = ClaryServer(binary, "tuning", extra_args=("--instance-shape", "%s=1:1" % INSTANCE))
    try:
        sm, s3 = server.client("sagemaker"), server.client("s3")
        bucket = "bench-tuning"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=code_tarball())
        source = "s3://%s/code/sourcedir.tar.gz" % bucket
        per_trial = a.epochs * a.epoch_seconds + 5
        for seed in seeds:
            for strategy in STRATEGIES:
                name = "bench-%s-s%d" % (strategy.lower(), seed)
                req = tuning_request(name, source, bucket, strategy, seed, a.trials, a.epochs, a.epoch_seconds)
                r = run_clary_job(sm, name, req, timeout=120 + a.trials * per_trial)
                runs[(strategy, seed)] = r
                values.setdefault(strategy, {})[seed] = [t["value"] for t in r["trials"]]
                walls.setdefault(strategy, {})[seed] = r["wall"]
                statuses = {}
                for t in r["trials"]:
                    statuses[t["status"]] = statuses.get(t["status"], 0) + 1
                print("  seed %d %-9s %s in %6.1f s (trials ran %2.0f%% of 2 x wall), best %.4f; trials: %s%s" % (
                    seed, strategy, r["status"], r["wall"], 100 * r["busy"], best_after(values[strategy][seed], a.trials),
                    ", ".join("%d %s" % (v, k) for k, v in sorted(statuses.items())),
                    "; " + r["failure"] if r["failure"] else ""), flush=True)
    finally:
        server.stop()
        shutil.rmtree(server.work, ignore_errors=True)

    order = ("Random", "Bayesian", "Hyperband", "TPE (optuna)")
    print()
    print("Median over %d seed(s) of the best Branin value after k trials (optimum %.6f; lower is better), "
          "and of the tuning job's wall time at MaxParallelTrainingJobs=2" % (len(seeds), OPTIMUM))
    print("%-13s" % "optimizer" + "".join("%12s" % ("k=%d" % k) for k in marks) + "%12s" % "wall s")
    for opt in order:
        row = "%-13s" % opt + "".join("%12.4f" % median([best_after(values[opt][s], k) for s in seeds]) for k in marks)
        row += "%12.1f" % median(list(walls[opt].values())) if opt in walls else "%12s" % "(in-proc)"
        print(row)

    target = median([best_after(tpe_values[s], a.trials) for s in seeds])
    print()
    print("Trials to reach TPE's median best after %d trials (%.4f), per seed %s; median:" % (
        a.trials, target, ",".join(map(str, seeds))))
    needed = {}
    for opt in order:
        per = [trials_to_reach(values[opt][s], target) for s in seeds]
        needed[opt] = median(per)
        print("  %-13s %6s   (%s)" % (opt, fmt_count(needed[opt], a.trials), " ".join(fmt_count(x, a.trials) for x in per)))

    time_ratios, wall_ratios, common = [], [], []
    for s in seeds:
        rnd, hb = runs[("Random", s)], runs[("Hyperband", s)]
        t = max(best_after(values["Random"][s], a.trials), best_after(values["Hyperband"][s], a.trials))
        tr, th = time_to_reach(rnd["trials"], t), time_to_reach(hb["trials"], t)
        common.append((s, t, tr, th))
        if tr > 0 and math.isfinite(tr) and math.isfinite(th):
            time_ratios.append(th / tr)
        wall_ratios.append(hb["wall"] / rnd["wall"])
    print()
    print("Hyperband vs Random (same seed: same configurations in the same order), per seed:")
    for s, t, tr, th in common:
        print("  seed %d: both reach %.4f; Random after %.1f s, Hyperband after %.1f s; whole job %.1f s vs %.1f s" % (
            s, t, tr, th, runs[("Random", s)]["wall"], runs[("Hyperband", s)]["wall"]))

    print()
    print("Goals (medians over seeds; load average %s at the start, %s at the end):" % (load_start, loadavg()))
    b, p = needed["Bayesian"], needed["TPE (optuna)"]
    ratio = b / p if math.isfinite(b) and math.isfinite(p) and p > 0 else math.inf if math.isfinite(p) else math.nan
    print("  Bayesian trials to reach TPE's median best / TPE's: %s / %s = %s   (goal: <= 1.00)" % (
        fmt_count(b, a.trials), fmt_count(p, a.trials), "%.2f" % ratio if math.isfinite(ratio) else "inf (never reached)"))
    if time_ratios:
        print("  Hyperband wall time / Random wall time at the same best objective: %.2f   (goal: <= 0.50)"
              % median(time_ratios))
    print("  Hyperband / Random whole-job wall time (%d trials each): %.2f" % (a.trials, median(wall_ratios)))


if __name__ == "__main__":
    main()
