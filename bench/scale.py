"""The MongoDB search at scale: many workers, thousands of trials, what each trial costs MongoDB.

    python3 bench/scale.py --curves RESULTS_DIR --workers 100 --trials 1000 --epochs 10 \\
        --epoch-seconds 10 --prune curve --kill-share 0.1 --json scale.json
    python3 bench/scale.py --curves RESULTS_DIR --quick

The real driver (hyperopt_optimize.py --mongo: TPE, the experiment total, the requeueing of lost
trials) and real workers (hyperopt_worker.py: reserve, the heartbeat thread, the stopping rule and
its partial results, the result stored before its file), with the training replaced, in the
benchmark's own processes, by a replay: each trial draws a recorded learning curve at random from
RESULTS_DIR (result files of either key style, e.g. the classic repo's) and reports one epoch of it
every --epoch-seconds. --kill-share of the workers are SIGKILLed (with their trial) at random
moments and started again: the driver must requeue their trials after --stale-after.

Every command the driver and the workers send is counted in the client (pymongo's command
monitoring, sizes as BSON), so the figures hold for any server. Printed and in --json: bytes and
operations per trial while the first 100 trials finished against the last 100 (driver and workers,
read and written), the driver's seconds per suggestion, the workers' idle share, trials finished,
lost (not finished with a result) and run twice (more than one result file). --prefill N starts the
experiment with N finished trials (random points of the space, replayed curves), as a resumed
experiment: the costs at 10,000 trials without running 10,000. --mongo URL uses that MongoDB instead
of the test stand-in (tests/mongo_standin.py) that the bench starts and stops.
"""

import argparse
import atexit
import collections
import contextlib
import glob
import io
import json
import os
import pickle
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import types
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXP = "scale"
WINDOW = 100  # trials: the first and the last this many finished are compared
METRIC = "val_fine_outputs_accuracy"


# --- In every process of the bench: count what is sent to MongoDB and read back ----------------


class CommandCounter:
    """pymongo command monitoring: per second, operations, bytes sent and bytes received (as BSON),
    written to FOLDER/<role>-<pid>.json every 2 s and at exit."""

    def __init__(self, folder, role):
        import pymongo.monitoring

        self.path = os.path.join(folder, f"{role}-{os.getpid()}.json")
        self.role, self.lock = role, threading.Lock()
        self.seconds = collections.defaultdict(lambda: [0, 0, 0])
        listener = type(
            "Listener",
            (pymongo.monitoring.CommandListener,),
            {"started": self.started, "succeeded": self.succeeded, "failed": lambda _, event: None},
        )
        pymongo.monitoring.register(listener())
        threading.Thread(target=self._write_every, args=(2,), daemon=True).start()
        atexit.register(self.write)

    def started(self, event):
        import bson

        size = len(bson.encode(event.command))
        with self.lock:
            second = self.seconds[int(time.time())]
            second[0] += 1
            second[1] += size

    def succeeded(self, event):
        import bson

        size = len(bson.encode(event.reply))
        with self.lock:
            self.seconds[int(time.time())][2] += size

    def write(self):
        with self.lock:
            rows = [[t, *v] for t, v in sorted(self.seconds.items())]
        with open(self.path + ".tmp", "w") as f:
            json.dump({"role": self.role, "seconds": rows}, f)
        os.replace(self.path + ".tmp", self.path)

    def _write_every(self, period_s):
        while True:
            time.sleep(period_s)
            self.write()


# --- In the workers: the training replaced by a replayed learning curve ------------------------


def replayed_trial(work_dir, worker_id, epoch_seconds, rng):
    """A stand-in for trial.run_trial: the trial's stopping rule and hooks (the heartbeat) see one
    epoch of a recorded curve every epoch_seconds; the result has the form of a real one (every
    history series). Keras is never imported."""
    import record

    with open(os.path.join(work_dir, "curves.json")) as f:
        histories = json.load(f)
    runs = open(os.path.join(work_dir, "runs", f"worker{worker_id}.jsonl"), "a", buffering=1)

    def run_trial(hype_space, settings, rule=None, hooks=(), trial_id=None, callbacks=()):
        start, epochs, full = time.time(), settings.epochs, rng.choice(histories)
        for hook in hooks:  # as training begins
            hook()
        ran = 0
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_seconds)
            ran = epoch
            goes_on = rule is None or rule.report(epoch, full[METRIC][epoch - 1])
            for hook in hooks:
                hook()
            if not goes_on:
                break
        history = {key: values[:ran] for key, values in full.items()}
        best = max(history[METRIC])
        pruned_at = rule.pruned_at_epoch if rule is not None else None
        result = {
            "status": "ok",
            "loss": -best,
            "fine_best_accuracy": best,
            "history": history,
            "model_name": record.model_name(best, uuid.uuid4().hex[:8]),
            "space": hype_space,
            "epochs_run": ran,
            "best_epoch": history[METRIC].index(best) + 1,
            "pruned": pruned_at is not None,
            "pruned_at_epoch": pruned_at,
            "train_time_s": round(time.time() - start, 1),
            **settings.recorded(),
            "trial_id": trial_id,
        }
        runs.write(
            json.dumps(
                {
                    "tid": trial_id,
                    "start": start,
                    "end": time.time(),
                    "epochs": ran,
                    "pid": os.getpid(),
                }
            )
            + "\n"
        )
        return result, None

    return run_trial


def worker_process(work_dir, worker_id, epoch_seconds, argv, trial_process=False):
    """A worker (or, with trial_process, one of its per-trial processes): hyperopt_worker.py's main,
    its training replayed, its commands counted; its per-trial processes started as this one."""
    CommandCounter(os.path.join(work_dir, "counts"), "worker")
    import hyperopt_worker

    # objective.run imports trial.run_trial as a trial starts: this process's trial module replays
    sys.modules["trial"] = types.SimpleNamespace(
        run_trial=replayed_trial(
            work_dir, worker_id, epoch_seconds, random.Random(f"{worker_id}-{os.getpid()}")
        )
    )

    class TrialProcess(hyperopt_worker.TrialProcess):
        def __init__(self, args, *rest, **kwargs):
            super().__init__(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "_trial",
                    work_dir,
                    str(worker_id),
                    str(epoch_seconds),
                    *args[1:],
                ],
                *rest,
                **kwargs,
            )

    hyperopt_worker.TrialProcess = TrialProcess
    return hyperopt_worker.main(argv)


def driver_process(work_dir, argv):
    """The driver: hyperopt_optimize.py's main, its commands counted and its suggestions timed."""
    CommandCounter(os.path.join(work_dir, "counts"), "driver")
    from hyperopt import tpe

    import hyperopt_optimize

    suggest, timings = tpe.suggest, open(os.path.join(work_dir, "suggest.jsonl"), "a", buffering=1)

    def timed_suggest(new_ids, domain, trials, seed, *args, **kwargs):
        start = time.perf_counter()
        docs = suggest(new_ids, domain, trials, seed, *args, **kwargs)
        timings.write(
            json.dumps(
                {"t": time.time(), "s": time.perf_counter() - start, "trials": len(trials.trials)}
            )
            + "\n"
        )
        return docs

    tpe.suggest = timed_suggest
    return hyperopt_optimize.run_search(hyperopt_optimize.parse_args(argv))


# --- The orchestration ---------------------------------------------------------------------------


def curves_from(folder, epochs):
    """The full histories of the result files in folder with at least `epochs` epochs, in this
    project's key names (the classic repo's val_fine_outputs_acc becomes ..._accuracy)."""
    from replay import curve_of, load_search

    names, _, _, _ = load_search(folder)
    histories = []
    for name in names:
        with open(os.path.join(folder, name)) as f:
            history = json.load(f).get("history") or {}
        if len(curve_of({"history": history}) or []) < epochs:
            continue
        renamed = {
            k[: -len("_acc")] + "_accuracy" if k.endswith("_acc") else k: [float(v) for v in vs]
            for k, vs in history.items()
            if isinstance(vs, list) and len(vs) >= epochs
        }
        histories.append({k: v[:epochs] for k, v in renamed.items()})
    if not histories:
        sys.exit(
            f"error: no result file in {folder} has {epochs} epochs of validation accuracy: "
            f"give --curves the results folder of a finished search, or fewer --epochs"
        )
    return histories


def write_tiny_archive(folder):
    """A CIFAR-100 archive of 2 images a class: the workers check that the experiment's dataset
    loads before they take trials; the replayed trials read none."""
    import numpy as np

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(os.path.join(folder, "cifar-100-python.tar.gz"), "w:gz") as tar:
        for member, per_class in (("train", 2), ("test", 1)):
            fine = [c for c in range(100) for _ in range(per_class)]
            batch = {
                "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
                "fine_labels": fine,
                "coarse_labels": [c // 5 for c in fine],
            }
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        meta = pickle.dumps(
            {
                "fine_label_names": [f"fine{i}" for i in range(100)],
                "coarse_label_names": [f"coarse{i}" for i in range(20)],
            },
            protocol=2,
        )
        info = tarfile.TarInfo("cifar-100-python/meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))


def start_standin(work_dir):
    """tests/mongo_standin.py in a process of its own; (process, port)."""
    log = open(os.path.join(work_dir, "standin.log"), "w")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "mongo_standin.py"), "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    line = process.stdout.readline()  # "MongoDB stand-in on 127.0.0.1:PORT ..."
    if "127.0.0.1:" not in line:
        sys.exit(f"error: the MongoDB stand-in did not start: {line.strip()} (see {log.name})")
    return process, int(line.split("127.0.0.1:")[1].split()[0])


def prefill(url, n, histories, epochs, seed):
    """n finished trials in the experiment, as the driver and workers would have stored them."""
    import pymongo
    from hyperopt import Trials, rand
    from hyperopt.base import JOB_STATE_DONE, Domain, SONify
    from hyperopt.utils import coarse_utcnow

    import mongo_search
    from search_space import space

    m = mongo_search.parse_url(url)
    db = pymongo.MongoClient(m["host"], int(m["port"]))[m["db"]]
    domain, rng = Domain(lambda _: 0, space), random.Random(seed)
    docs = rand.suggest(list(range(n)), domain, Trials(), seed)
    now = coarse_utcnow()
    for doc in docs:
        history = rng.choice(histories)
        best = max(history[METRIC])
        doc.update(
            exp_key=EXP,
            state=JOB_STATE_DONE,
            owner=["prefill:0"],
            book_time=now,
            refresh_time=now,
            version=3,
            **{mongo_search.SLOT: f"{EXP}#{doc['tid']}"},
            result={
                "status": "ok",
                "loss": -best,
                "fine_best_accuracy": best,
                "history": history,
                "model_name": f"model_{best:.4f}_prefill{doc['tid']}",
                "trial_id": doc["tid"],
                "epochs_budget": epochs,
                "epochs_run": epochs,
                "pruned": False,
                "pruned_at_epoch": None,
            },
        )
    for start in range(0, n, 500):
        db.jobs.insert_many([SONify(doc) for doc in docs[start : start + 500]])
    db.job_ids.update_one({"a": 0}, {"$set": {"last_id": n}}, upsert=True)


def self_command(*args):
    return [sys.executable, os.path.abspath(__file__), *map(str, args)]


class Workers:
    """W worker processes, each in a process group of its own (a SIGKILL takes its trial too)."""

    def __init__(self, work_dir, url, epoch_seconds, worker_options):
        self.work_dir, self.url, self.epoch_seconds = work_dir, url, epoch_seconds
        self.options, self.processes, self.kills = worker_options, {}, 0

    def start(self, worker_id):
        log = open(os.path.join(self.work_dir, "logs", f"worker{worker_id}.log"), "a")
        self.processes[worker_id] = subprocess.Popen(
            self_command(
                "_worker",
                self.work_dir,
                worker_id,
                self.epoch_seconds,
                "--mongo",
                self.url,
                "--exp-key",
                EXP,
                *self.options,
            ),
            cwd=self.work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_and_restart(self, worker_id):
        os.killpg(self.processes[worker_id].pid, signal.SIGKILL)
        self.processes[worker_id].wait()
        self.kills += 1
        self.start(worker_id)

    def stop_all(self):
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def finished_count(url):
    import pymongo

    import mongo_search

    m = mongo_search.parse_url(url)
    with pymongo.MongoClient(m["host"], int(m["port"])) as client:
        return client[m["db"]].jobs.count_documents({"exp_key": EXP, "state": 2})


def run(args):
    work = os.path.abspath(args.work_dir)
    if os.path.exists(work):
        shutil.rmtree(work)
    for folder in ("counts", "runs", "logs"):
        os.makedirs(os.path.join(work, folder))
    histories = curves_from(args.curves, args.epochs)
    with open(os.path.join(work, "curves.json"), "w") as f:
        json.dump(histories, f)
    write_tiny_archive(os.path.join(work, "ml_req"))
    standin = None
    if args.mongo:
        url = args.mongo
    else:
        standin, port = start_standin(work)
        url = f"mongo://127.0.0.1:{port}/hks_scale/jobs"
    total, workers, driver = args.prefill + args.trials, None, None
    try:
        if args.prefill:
            print(f"Prefilling {args.prefill} finished trials ...", flush=True)
            prefill(url, args.prefill, histories, args.epochs, args.seed)
        start = time.time()
        workers = Workers(
            work,
            url,
            args.epoch_seconds,
            ["--poll-interval", str(args.poll_interval)]
            + (["--no-subprocesses"] if args.no_subprocesses else []),
        )
        for worker_id in range(args.workers):
            workers.start(worker_id)
        driver_log = open(os.path.join(work, "logs", "driver.log"), "w")
        driver = subprocess.Popen(
            self_command(
                "_driver",
                work,
                "--mongo",
                url,
                "--exp-key",
                EXP,
                "--epochs",
                args.epochs,
                "--max-evals",
                total,
                "--prune",
                args.prune,
                "--stale-after",
                args.stale_after,
                "--seed",
                args.seed,
            ),
            cwd=work,
            stdout=driver_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        rng, last_report = random.Random(args.seed), 0
        # when that many trials have finished, one worker is killed
        kills = sorted(
            rng.uniform(0.1, 0.9) * args.trials
            for _ in range(round(args.kill_share * args.workers))
        )
        while driver.poll() is None:
            time.sleep(1)
            done = finished_count(url) - args.prefill
            while kills and done >= kills[0]:
                kills.pop(0)
                workers.kill_and_restart(rng.randrange(args.workers))
            if time.time() - last_report >= 60:
                last_report = time.time()
                print(
                    f"{time.time() - start:6.0f} s: {done} of {args.trials} trials finished, "
                    f"{workers.kills} workers killed",
                    flush=True,
                )
        wall = time.time() - start
        workers.stop_all()
        time.sleep(2.5)  # the last counts are written
        figures = measure(work, url, args, total, wall, workers.kills)
        figures["driver_exit"] = driver.returncode
    finally:  # also on an error or Ctrl-C: no process of the bench is left running
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if workers is not None:
            workers.stop_all()
        if standin is not None:
            os.killpg(standin.pid, signal.SIGTERM)
            standin.wait()
    return figures


def measure(work, url, args, total, wall, kills):
    import bson
    import pymongo

    import mongo_search

    m = mongo_search.parse_url(url)
    with pymongo.MongoClient(m["host"], int(m["port"])) as client:
        db = client[m["db"]]
        docs = list(db.jobs.find({"exp_key": EXP}, projection=["tid", "state", "result.status"]))
        size = sum(len(bson.encode(d)) for d in db.jobs.find({"exp_key": EXP}))
        size += sum(len(bson.encode(d)) for d in db.fs.chunks.find())
    live = {d["tid"] for d in docs if d["tid"] >= args.prefill}
    ok = [
        d
        for d in docs
        if d["state"] == 2 and d["result"].get("status") == "ok" and d["tid"] in live
    ]
    runs = [
        json.loads(line)
        for path in glob.glob(os.path.join(work, "runs", "*.jsonl"))
        for line in open(path)
    ]
    kept = collections.Counter(r["tid"] for r in runs)  # runs trained to their end
    files = collections.Counter(
        json.load(open(p)).get("trial_id")
        for p in glob.glob(os.path.join(work, "results", "*.txt.json"))
    )
    ends = sorted(r["end"] for r in runs)
    seconds = collections.defaultdict(
        lambda: [0, 0, 0, 0, 0]
    )  # t: driver ops, worker ops, out, in,
    # the driver's bytes
    for path in glob.glob(os.path.join(work, "counts", "*.json")):
        counted = json.load(open(path))
        for t, ops, out, received in counted["seconds"]:
            row = seconds[t]
            row[0 if counted["role"] == "driver" else 1] += ops
            row[2] += out
            row[3] += received
            row[4] += (out + received) if counted["role"] == "driver" else 0

    n = max(1, min(WINDOW, len(ends)))

    def window(first, last):
        """Operations and bytes from the second after `first` to `last`, per trial finished then."""
        rows = [v for t, v in seconds.items() if first < t <= last]
        ops, out, received = (
            sum(r[0] + r[1] for r in rows),
            sum(r[2] for r in rows),
            sum(r[3] for r in rows),
        )
        return (
            ops / n,
            (out + received) / n,
            sum(r[0] for r in rows) / n,
            sum(r[4] for r in rows) / n,
        )

    first = window(0, int(ends[n - 1])) if ends else (0, 0, 0, 0)
    last = (
        window(int(ends[-n - 1]) if len(ends) > n else 0, int(ends[-1]) + 1)
        if ends
        else (0, 0, 0, 0)
    )
    suggests = (
        [json.loads(line) for line in open(os.path.join(work, "suggest.jsonl"))]
        if os.path.exists(os.path.join(work, "suggest.jsonl"))
        else []
    )
    busy = sum(r["end"] - r["start"] for r in runs)
    driver_log = open(os.path.join(work, "logs", "driver.log")).read()
    return {
        "workers": args.workers,
        "trials": args.trials,
        "prefill": args.prefill,
        "epochs": args.epochs,
        "epoch_seconds": args.epoch_seconds,
        "prune": args.prune,
        "kill_share": args.kill_share,
        "subprocesses": not args.no_subprocesses,
        "trials_finished": len(ok),
        "lost": args.trials - len(ok),
        "run_twice": sum(c > 1 for c in files.values()),  # result files of one trial
        "trained_to_the_end_twice": sum(c > 1 for c in kept.values()),
        "experiment_trials": len(docs),
        "total_respected": len(docs) == total,
        "workers_killed": kills,
        "requeued": driver_log.count("back in the queue"),
        "bytes_per_trial_first100": round(first[1]),
        "bytes_per_trial_last100": round(last[1]),
        "ops_per_trial_first100": round(first[0], 1),
        "ops_per_trial_last100": round(last[0], 1),
        "driver_ops_per_trial_first100": round(first[2], 1),
        "driver_ops_per_trial_last100": round(last[2], 1),
        "driver_bytes_per_trial_first100": round(first[3]),
        "driver_bytes_per_trial_last100": round(last[3]),
        "suggest_s_first100": round(statistics.fmean(s["s"] for s in suggests[:WINDOW]), 3)
        if suggests
        else None,
        "suggest_s_last100": round(statistics.fmean(s["s"] for s in suggests[-WINDOW:]), 3)
        if suggests
        else None,
        "worker_idle_share": round(1 - busy / (args.workers * wall), 3),
        "epochs_per_trial": round(statistics.fmean(r["epochs"] for r in runs), 2) if runs else None,
        "mongo_bytes_per_1000_trials": round(size / max(1, len(docs)) * 1000),
        "wall_s": round(wall),
    }


def report(figures):
    f = figures
    print(
        f"\n{f['workers']} workers, {f['trials']} trials ({f['prefill']} prefilled before them), "
        f"{f['epochs']} epochs of {f['epoch_seconds']} s, --prune {f['prune']}, "
        f"{f['workers_killed']} workers killed; {f['wall_s']} s"
    )
    print(f"{'':24}{'first 100':>12}{'last 100':>12}")
    print(
        f"{'bytes per trial':24}{f['bytes_per_trial_first100']:>12,}"
        f"{f['bytes_per_trial_last100']:>12,}"
    )
    print(
        f"{'operations per trial':24}{f['ops_per_trial_first100']:>12}"
        f"{f['ops_per_trial_last100']:>12}"
    )
    print(
        f"{'  of them the driver':24}{f['driver_ops_per_trial_first100']:>12}"
        f"{f['driver_ops_per_trial_last100']:>12}"
    )
    print(
        f"{'driver bytes per trial':24}{f['driver_bytes_per_trial_first100']:>12,}"
        f"{f['driver_bytes_per_trial_last100']:>12,}"
    )
    print(
        f"{'seconds per suggestion':24}{f['suggest_s_first100']!s:>12}"
        f"{f['suggest_s_last100']!s:>12}"
    )
    print(
        f"trials finished {f['trials_finished']}, lost {f['lost']}, run twice {f['run_twice']}, "
        f"in the experiment {f['experiment_trials']} (total respected: {f['total_respected']}), "
        f"requeued {f['requeued']}; workers idle {f['worker_idle_share']:.0%}; "
        f"{f['epochs_per_trial']} epochs per trial; MongoDB holds "
        f"{f['mongo_bytes_per_1000_trials'] / 1e6:.1f} MB per 1,000 trials"
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_driver"]:
        return driver_process(argv[1], argv[2:])
    if argv[:1] in (["_worker"], ["_trial"]):
        return worker_process(argv[1], int(argv[2]), float(argv[3]), argv[4:], argv[0] == "_trial")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--curves",
        required=True,
        metavar="DIR",
        help="result files whose learning curves are replayed",
    )
    p.add_argument("--workers", type=int, default=100)
    p.add_argument("--trials", type=int, default=1000, help="trials run (after --prefill)")
    p.add_argument("--epochs", type=int, default=10, help="the experiment's --epochs")
    p.add_argument("--epoch-seconds", type=float, default=10.0)
    p.add_argument(
        "--prune", default="curve", help="the experiment's --prune (default %(default)s)"
    )
    p.add_argument(
        "--kill-share", type=float,
        help="share of the workers SIGKILLed and restarted (default 0.1; --quick: 0.34)"
    )
    p.add_argument("--stale-after", type=float, default=30, help="the driver's --stale-after")
    p.add_argument("--poll-interval", type=float, default=5, help="the workers' --poll-interval")
    p.add_argument(
        "--no-subprocesses",
        action="store_true",
        help="workers run their trials in their own process (hyperopt's --no-subprocesses)",
    )
    p.add_argument(
        "--prefill", type=int, default=0, help="finished trials in the experiment before the run"
    )
    p.add_argument(
        "--mongo", metavar="URL", help="a MongoDB to use (default: the stand-in, started here)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="scale_run", help="the run's folder (emptied first)")
    p.add_argument("--json", metavar="OUT")
    p.add_argument(
        "--quick", action="store_true", help="3 workers, 24 trials of 4 short epochs, one killed"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.workers, args.trials, args.epochs, args.epoch_seconds = 3, 24, 4, 0.3
        args.stale_after, args.poll_interval = 10, 1
    if args.kill_share is None:
        args.kill_share = 0.34 if args.quick else 0.1
    figures = run(args)
    report(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
