"""Tiny CIFAR archives written in the official on-disk format, for quick tests on 2 CPU cores."""
import io
import json
import os
import pickle
import shutil
import sys
import tarfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HKS_NO_DOWNLOAD"] = "1"  # tests never fetch the real archive
# The real archive, for the tests that need it: only where named, or in the repository's ml_req/.
REAL_ARCHIVE = os.environ.get("HKS_REAL_ARCHIVE") or os.path.join(ROOT, "ml_req", "cifar-100-python.tar.gz")

# The model pictures (keras.utils.plot_model) need graphviz's dot: make install_req installs it where apt-get is.
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (make "
                                    "install_req installs it): the model pictures cannot be drawn")

# Ten colours far apart: images of class k are mostly palette[k % 10], so a small CNN learns them fast.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255], [255, 255, 255], [0, 0, 0], [255, 128, 0], [128, 0, 255]], dtype=np.int16)


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


def write_cifar100_archive(folder, classes=range(100), train_per_class=3, test_per_class=1, seed=0, tamper=None):
    """cifar-100-python.tar.gz in the official layout; fine class k belongs to coarse class k // 5.

    tamper(member, batch) may change each member's dict before it is pickled, to write a bad archive.
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
                                            "coarse_label_names": [f"coarse{i}" for i in range(20)]}, tamper)
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
            _add(tar, f"cifar-10-batches-py/{member}", {"data": synthetic_images(labels, rng), "labels": labels},
                 tamper)
        _add(tar, "cifar-10-batches-py/batches.meta", {"label_names": [f"class{i}" for i in range(10)]}, tamper)
    return path


@pytest.fixture(autouse=True)
def fresh_data_cache():
    """Each test sees the archive it wrote, not one cached by an earlier test."""
    import data
    data.clear_cache()
    yield


@pytest.fixture
def tiny_cifar100(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req")
    return tmp_path / "ml_req"


def classic_result(accuracy, hype_space, epochs, model_name=None):
    """A result as the classic repo wrote it: its keys only, Keras 2 history names, no test accuracy, no time."""
    curve = list(np.linspace(0.01, accuracy, epochs))
    return {"coarse_best_accuracy": accuracy + 0.1, "coarse_best_loss": 1.0, "coarse_end_accuracy": accuracy + 0.09,
            "coarse_end_loss": 1.1, "fine_best_accuracy": accuracy, "fine_best_loss": 1.5,
            "fine_end_accuracy": accuracy - 0.01, "fine_end_loss": 1.6, "loss": -accuracy, "real_loss": 2.5,
            "history": {"val_fine_outputs_acc": curve, "fine_outputs_acc": curve, "loss": curve},
            "space": hype_space, "status": "ok",
            **({"model_name": model_name} if model_name else {})}


def write_classic_search(folder, n_trials, seed=0):
    """What a user of the classic repo has: results/ with its result files (long-float names) and the results.pkl
    of those trials (hyperopt Trials whose results carry the classic keys only). Returns the best model_name."""
    from hyperopt import Trials, fmin, tpe

    from search_space import space

    rng = np.random.default_rng(seed)
    results = os.path.join(folder, "results")
    os.makedirs(results, exist_ok=True)

    def classic_objective(hype_space):
        accuracy = float(rng.uniform(0.05, 0.68))
        name = f"model_{accuracy:.12g}_{rng.integers(16 ** 5):05x}"  # the classic names: long float, 5 hex digits
        result = classic_result(accuracy, hype_space, 100, name)
        with open(os.path.join(results, name + ".txt.json"), "w") as f:
            json.dump(result, f)
        return result

    trials = Trials()
    fmin(classic_objective, space, algo=tpe.suggest, max_evals=n_trials, trials=trials, show_progressbar=False,
         rstate=np.random.default_rng(seed))
    with open(os.path.join(folder, "results.pkl"), "wb") as f:
        pickle.dump(trials, f)
    return min((t["result"] for t in trials.trials), key=lambda r: r["loss"])["model_name"]


def new_jobs(jobs, exp_key, tids):
    """Queued MongoDB jobs of the experiment, as a driver inserts them (no hyperspace: spec None)."""
    from hyperopt.base import JOB_STATE_NEW

    jobs.insert_many([{"exp_key": exp_key, "tid": tid, "state": JOB_STATE_NEW, "version": 0, "owner": None,
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
    """The end of an epoch (0, 1, ...) on a reserved worker, as trial.py reports it; whether it stops."""
    ctrl, (rule, heartbeat) = worker
    goes_on = rule.report(epoch + 1, accuracy)
    heartbeat.beat()
    return not goes_on
