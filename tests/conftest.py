"""The tests' helpers: tiny CIFAR archives in the official on-disk format, small networks, classic
results, quick in-process searches, and MongoDB (a stand-in) with the real scripts as processes;
everything sized for quick tests on 2 CPU cores."""
import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse
import uuid

import numpy as np
import pymongo
import pytest
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_NEW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HKS_NO_DOWNLOAD"] = "1"  # tests never fetch the real archive
import mongo_search  # noqa: E402
from mongo_standin import MongoStandin  # noqa: E402
from search_space import CLASSIC_BEST_SPACE  # noqa: E402

# The real archive, for the tests that need it: only where named, or in the repository's ml_req/.
REAL_ARCHIVE = (os.environ.get("HKS_REAL_ARCHIVE")
                or os.path.join(ROOT, "ml_req", "cifar-100-python.tar.gz"))

# The model pictures (keras.utils.plot_model) need graphviz's dot: make install_req installs it
# where apt-get is.
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None,
                                    reason="graphviz's dot is not installed (make "
                                    "install_req installs it): the model pictures cannot be drawn")

# A --seed whose first six trials are small networks (seed 0's first and third are among the
# largest of the space): the end-to-end searches check what runs, not how well.
QUICK_SEED = "10"

# A small network of the space, quick to train on a CPU.
SMALL = dict(CLASSIC_BEST_SPACE, conv_hiddn_units_mult=0.3, fc_units_1_mult=0.2, residual=None,
             first_conv=None, nb_conv_pool_layers=2, pooling_type="max", batch_size=64.0)

# Together these cover every value of every architecture key at least once.
CASES = [
    dict(pooling_type="max", residual=None, first_conv=None, nb_conv_pool_layers=2, use_BN=False,
         one_more_fc=None),
    dict(pooling_type="avg", residual=1.0, first_conv=3, nb_conv_pool_layers=3, use_BN=True,
         one_more_fc=0.6),
    dict(pooling_type="all_conv", residual=2.0, first_conv=4, nb_conv_pool_layers=2, use_BN=True,
         one_more_fc=None, conv_pool_res_start_idx=1.0),
    dict(pooling_type="all_conv", residual=3.0, first_conv=None, nb_conv_pool_layers=3,
         use_BN=False,
         one_more_fc=0.6, activation="relu", conv_kernel_size=2.0, res_conv_kernel_size=4.0),
    dict(pooling_type="inception", residual=4.0, first_conv=3, nb_conv_pool_layers=3, use_BN=False,
         one_more_fc=None,
         conv_pool_res_start_idx=2.0, conv_kernel_size=4.0, res_conv_kernel_size=3.0),
    dict(pooling_type="inception", residual=None, first_conv=4, nb_conv_pool_layers=2, use_BN=True,
         one_more_fc=0.6),
]


# Ten colours far apart: images of class k are mostly palette[k % 10], so a small CNN learns them
# fast.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255], [255, 255, 255], [0, 0, 0], [255, 128, 0], [128, 0, 255]],
                   dtype=np.int16)


def synthetic_images(labels, rng):
    """(N, 3072) uint8 rows, channels first as in the archive: a class colour plus noise."""
    colours = PALETTE[np.asarray(labels) % len(PALETTE)]  # (N, 3)
    images = colours[:, :, None, None] + rng.integers(-40, 41, (len(labels), 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def _add(tar, name, obj, tamper=None):
    if tamper:
        tamper(name.split("/")[-1], obj)
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar100_archive(folder, classes=range(100), train_per_class=3, test_per_class=1, seed=0,
                           tamper=None):
    """cifar-100-python.tar.gz in the official layout; fine class k belongs to coarse class k // 5.

    tamper(member, batch) may change each member's dict before it is pickled, to write a bad
    archive.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "cifar-100-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for member, per_class in (("train", train_per_class), ("test", test_per_class)):
            fine = [c for c in classes for _ in range(per_class)]
            rng.shuffle(fine)
            _add(tar, f"cifar-100-python/{member}", {
                "data": synthetic_images(fine, rng), "fine_labels": list(fine),
                "coarse_labels": [c // 5 for c in fine], "batch_label": member,
                "filenames": [f"{i}.png" for i in range(len(fine))]}, tamper)
        _add(tar, "cifar-100-python/meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                            "coarse_label_names": [f"coarse{i}"
                                                                   for i in range(20)]}, tamper)
    return path


def write_cifar10_archive(folder, train_per_class=10, test_per_class=2, seed=0, tamper=None):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for member in members:
            per_class = test_per_class if member == "test_batch" else train_per_class
            labels = [c for c in range(10) for _ in range(per_class)]
            _add(tar, f"cifar-10-batches-py/{member}", {"data": synthetic_images(labels, rng),
                                                        "labels": labels},
                 tamper)
        _add(tar, "cifar-10-batches-py/batches.meta",
             {"label_names": [f"class{i}" for i in range(10)]}, tamper)
    return path


@pytest.fixture(autouse=True)
def fresh_data_cache():
    """Each test sees the archive it wrote, not one cached by an earlier test."""
    import data
    data.clear_cache()
    yield


@pytest.fixture(autouse=True)
def restore_stop_signal_handlers():
    """Each test starts with the process's signal handlers: a trial stopped in the test's process
    (lost_workers.Stopped) ignores the stop signals from then on."""
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    handlers = {sig: signal.getsignal(sig) for sig in signals}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture
def tiny_cifar100(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req")
    return tmp_path / "ml_req"


def classic_result(accuracy, hype_space, epochs, model_name=None):
    """A result as the classic repo wrote it: its keys only, Keras 2 history names, no test
    accuracy, no time."""
    curve = list(np.linspace(0.01, accuracy, epochs))
    return {"coarse_best_accuracy": accuracy + 0.1, "coarse_best_loss": 1.0,
            "coarse_end_accuracy": accuracy + 0.09,
            "coarse_end_loss": 1.1, "fine_best_accuracy": accuracy, "fine_best_loss": 1.5,
            "fine_end_accuracy": accuracy - 0.01, "fine_end_loss": 1.6, "loss": -accuracy,
            "real_loss": 2.5,
            "history": {"val_fine_outputs_acc": curve, "fine_outputs_acc": curve, "loss": curve},
            "space": hype_space, "status": "ok",
            **({"model_name": model_name} if model_name else {})}


def write_classic_search(folder, n_trials, seed=0):
    """What a user of the classic repo has: results/ with its result files (long-float names) and
    the results.pkl of those trials (hyperopt Trials whose results carry the classic keys only).
    Returns the best model_name."""
    from hyperopt import Trials, fmin, tpe

    from search_space import space

    rng = np.random.default_rng(seed)
    results = os.path.join(folder, "results")
    os.makedirs(results, exist_ok=True)

    def classic_objective(hype_space):
        accuracy = float(rng.uniform(0.05, 0.68))
        # the classic names: long float, 5 hex digits
        name = f"model_{accuracy:.12g}_{rng.integers(16 ** 5):05x}"
        result = classic_result(accuracy, hype_space, 100, name)
        with open(os.path.join(results, name + ".txt.json"), "w") as f:
            json.dump(result, f)
        return result

    trials = Trials()
    fmin(classic_objective, space, algo=tpe.suggest, max_evals=n_trials, trials=trials,
         show_progressbar=False, rstate=np.random.default_rng(seed))
    with open(os.path.join(folder, "results.pkl"), "wb") as f:
        pickle.dump(trials, f)
    return min((t["result"] for t in trials.trials), key=lambda r: r["loss"])["model_name"]


def new_jobs(jobs, exp_key, tids):
    """Queued MongoDB jobs of the experiment, as a driver inserts them (no hyperspace: spec None).
    """
    jobs.insert_many([{"exp_key": exp_key, "tid": tid, "state": JOB_STATE_NEW, "version": 0,
                       "owner": None,
                       "misc": {"tid": tid, "idxs": {}, "vals": {}, "cmd": None}, "spec": None,
                       "result": {"status": "new"}} for tid in tids])


def reserved_workers(mongo_url, exp_key, settings, names=("w:1", "w:2")):
    """One (ctrl, (rule, heartbeat)) per worker name: its own view of the experiment (as hyperopt's
    workers build them), a trial reserved, and the stopping rule and heartbeat objective.py gives
    it, training begun."""
    from hyperopt.mongoexp import MongoCtrl, MongoTrials

    from objective import heartbeat_of, trial_rule
    from settings import Settings

    settings = Settings.from_dict(settings)
    workers = []
    for name in names:
        view = MongoTrials(mongo_url, exp_key=exp_key, refresh=False)
        ctrl = MongoCtrl(view, view.handle.reserve([name], exp_key=exp_key), read_only=False)
        rule = trial_rule(settings, ctrl)
        heartbeat = heartbeat_of(settings, ctrl, rule)
        heartbeat.beat()  # as training begins
        workers.append((ctrl, (rule, heartbeat)))
    return workers


def end_epoch(worker, epoch, accuracy):
    """The end of an epoch (0, 1, ...) on a reserved worker, as trial.py reports it: whether it
    stops."""
    ctrl, (rule, heartbeat) = worker
    goes_on = rule.report(epoch + 1, accuracy)
    heartbeat.beat()
    return not goes_on


@pytest.fixture
def quick_search(tmp_path, monkeypatch):
    """In-process searches in tmp_path whose trials fail at once (no training): they still write
    result files."""
    import hyperopt_optimize
    import neural_net

    built = []

    def bad_combination(*args, **kwargs):
        built.append(1)
        raise ValueError("this combination cannot be built")
    monkeypatch.setattr(neural_net, "build_model", bad_combination)
    # the patch above applies in this process only
    monkeypatch.setattr(hyperopt_optimize, "TRIAL_PROCESS", False)
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    monkeypatch.chdir(tmp_path)

    def search(*args):
        return hyperopt_optimize.run_search(hyperopt_optimize.parse_args(["--epochs", "1", *args]))
    search.built = built
    return search


def saved_trials(folder):
    return pickle.loads((folder / "results.pkl").read_bytes()).trials


def result_names(folder):
    return sorted(p.name for p in (folder / "results").glob("*.txt.json"))


# --- MongoDB: the stand-in (tests/mongo_standin.py) or a real one, and the real scripts as
# processes. HKS_TEST_MONGO_URL=mongo://[USER:PASSWORD@]HOST:PORT runs the tests on a real MongoDB
# (each test uses a new database, dropped after). Every process a test starts is in its own
# process group, killed when the test ends, pass or fail.

REAL_MONGO = os.environ.get("HKS_TEST_MONGO_URL")
EXP = "test"


@pytest.fixture
def mongo_url():
    db = f"hks_test_{uuid.uuid4().hex[:8]}"
    if REAL_MONGO:
        url = f"{REAL_MONGO.rstrip('/')}/{db}/jobs"
        yield url
        with contextlib.closing(client(url)) as c:
            c.drop_database(db)
    else:
        with MongoStandin() as standin:
            yield f"mongo://127.0.0.1:{standin.port}/{db}/jobs"


def client(url):
    m = mongo_search.parse_url(url)
    auth = {"username": urllib.parse.unquote(m["user"]),
            "password": urllib.parse.unquote(m["password"])} \
        if m["user"] else {}
    return pymongo.MongoClient(m["host"], int(m["port"]), serverSelectionTimeoutMS=5000, **auth)


@pytest.fixture
def jobs(mongo_url):
    with contextlib.closing(client(mongo_url)) as c:
        yield c[mongo_search.parse_url(mongo_url)["db"]]["jobs"]


def stop(process, sig=signal.SIGTERM, wait_s=20):
    """Stop a process started by `processes` and whatever it started (its per-trial processes)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # anything left in its group
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def processes(tmp_path):
    """start(name, script, *args, **env): a script of the repo in tmp_path, logging to
    tmp_path/name.log."""
    started = []

    def start(name, script, *args, **env):
        log = open(tmp_path / f"{name}.log", "w")
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args],
                                   cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        process.log = tmp_path / f"{name}.log"
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        stop(process)
        log.close()


def output(process):
    return process.log.read_text()


def wait_for(condition, timeout_s, what, *watched):
    """condition()'s first true value; fails with the logs of `watched` if it never comes or they
    all exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if watched and all(p.poll() is not None for p in watched):
            break
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.log.name} (exit {p.poll()}):\n{output(p)[-3000:]}" for p in watched)
    pytest.fail(f"no {what} after {timeout_s} s\n{logs}")


def worker(processes, name, mongo_url, **env):
    return processes(name, "hyperopt_worker.py", "--mongo", mongo_url, "--exp-key", EXP,
                     "--poll-interval", "1", **env)


def driver(processes, name, mongo_url, *args):
    return processes(name, "hyperopt_optimize.py", "--mongo", mongo_url, "--exp-key", EXP,
                     "--epochs", "1", "--train-subset", "60", "--seed", QUICK_SEED, *args)


def finish(process, timeout_s=600):
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{process.log.name} still running after {timeout_s} s:\n{output(process)[-3000:]}")
    assert process.returncode == 0, output(process)
    return output(process)


def results(folder):
    return {f.name: json.loads(f.read_text()) for f in (folder / "results").glob("*.txt.json")}


def check_every_trial_done_once(jobs, folder, n):
    """n trials, all done and successful, each with exactly one result file: no trial lost or run
    twice."""
    docs = list(jobs.find({"exp_key": EXP}))
    assert len(docs) == n and all(d["state"] == JOB_STATE_DONE and d["result"]["status"] == "ok"
                                  for d in docs)
    files = results(folder)
    assert sorted(r["trial_id"] for r in files.values()) == sorted(d["tid"] for d in docs)
    assert {d["result"]["model_name"] + ".txt.json" for d in docs} == set(files)
    return docs, files


def reserved_trial(mongo_url, jobs):
    """A trial as a worker's process holds it: reserved, with hyperopt's ctrl."""
    from hyperopt.mongoexp import MongoCtrl

    trials = mongo_search.connect(mongo_url, EXP)
    jobs.insert_one({"exp_key": EXP, "tid": 1, "state": JOB_STATE_NEW, "owner": None, "version": 0})
    return MongoCtrl(trials, trials.handle.reserve(["w:1"], exp_key=EXP), read_only=False)


def run_objective(ctrl, tmp_path, monkeypatch, train_s, during_training=lambda: None):
    """objective._objective on a worker, where training (not a Keras fit: no epoch ends) takes
    train_s seconds."""
    import objective
    import trial
    from hyperopt.pyll import as_apply

    def train(hype_space, settings, callbacks):
        deadline = time.monotonic() + train_s
        during_training()
        time.sleep(max(0.0, deadline - time.monotonic()))
        return {"status": "ok", "loss": -0.5, "fine_best_accuracy": 0.5}, None

    monkeypatch.setattr(trial, "train", train)
    settings = {"results_dir": str(tmp_path / "results"), "prune": "none", "epochs": 1}
    return objective._objective(as_apply({"lr_rate_mult": 1.0}), {}, ctrl, settings)
