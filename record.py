"""The result record: what a trial returns, what results/<model_name>.txt.json holds, and how
results of this project and of the classic repo are read back.

A finished trial's result (status "ok"):
    loss                 minus the best validation fine accuracy (hyperopt minimizes it)
    fine_best_accuracy   that best validation fine accuracy; also fine_best_loss, fine_end_*,
                         coarse_* (None on CIFAR-10), fine_test_accuracy, coarse_test_accuracy
    history              per-epoch metrics as Keras names them (METRIC is the one selected on)
    space                the hyperspace trained; model_name: model_<accuracy>_<run id>
    epochs_run, best_epoch, pruned, pruned_at_epoch, train_time_s, nb_params, precision, ...
    dataset, validation, train_subset, seed, epochs_budget, prune: the settings that give it meaning
A failed trial: status "fail", error (one line), traceback, space, model_name failed_<run id>.
A running trial's partial result (stopping rules): status "running", history of METRIC alone.
The classic repo's files have the same keys, without the settings, and Keras 2 history names
(val_fine_outputs_acc); it selected its models on the test set, so their "validation" accuracy
was measured there (selected_on).
"""
import glob
import json
import math
import os
import sys

from hyperopt import STATUS_FAIL, STATUS_OK, STATUS_RUNNING

import utils

METRIC = "val_fine_outputs_accuracy"  # what the search maximizes, as Keras 3 names it
CLASSIC_METRIC = "val_fine_outputs_acc"  # the same, as Keras 2 named it in the classic repo's files
SUFFIX = ".txt.json"
RESULTS_DIR = "results"


def model_name(accuracy, run_id):
    """model_<best validation fine accuracy>_<run id>: result files sort by accuracy."""
    return f"model_{accuracy:.4f}_{run_id}"


def result_path(results_dir, name):
    return os.path.join(results_dir, name + SUFFIX)


def save_result(result, results_dir=RESULTS_DIR):
    """Write results_dir/<model_name>.txt.json, atomically; return its path."""
    path = result_path(results_dir, result["model_name"])
    utils.atomic_write(path, lambda f: json.dump(result, f, indent=4, sort_keys=True, default=str))
    return path


def failed_result(hype_space, error, run_id, **more):
    """A failed trial's record: the search goes on, and the report says why it failed."""
    return {"status": STATUS_FAIL, "model_name": f"failed_{run_id}", "space": hype_space,
            "error": error.strip()[:2000], **more}


def running_result(accuracy):
    """The partial result a running trial publishes: its validation accuracies so far."""
    return {"status": STATUS_RUNNING, "history": {METRIC: list(accuracy)}}


def summarize(history, head):
    """The classic result keys of one head ("fine" or "coarse") from the validation history."""
    acc, loss = history.get(f"val_{head}_outputs_accuracy"), history.get(f"val_{head}_outputs_loss")
    if not acc:
        return dict.fromkeys([f"{head}_best_accuracy", f"{head}_best_loss", f"{head}_end_accuracy",
                              f"{head}_end_loss"])
    return {f"{head}_best_accuracy": max(acc), f"{head}_best_loss": min(loss),
            f"{head}_end_accuracy": acc[-1], f"{head}_end_loss": loss[-1]}


def curve(result):
    """The validation fine accuracy epoch by epoch, in either key style ([] where not recorded)."""
    history = result.get("history") or {}
    return list(history.get(METRIC) or history.get(CLASSIC_METRIC) or [])


def selected_on(result):
    """The images a result's "validation" accuracy was measured on: "split" (held-out training
    images) or "test" (--validation test, and every classic result: the classic repo selected on
    the test set)."""
    return result.get("validation") or "test"


def best_result(trials):
    """The finished result with the lowest loss (the best validation fine accuracy), or None."""
    ok = [t["result"] for t in trials.trials if t["result"].get("status") == STATUS_OK
          and isinstance(t["result"].get("loss"), (int, float))]
    return min(ok, key=lambda r: r["loss"]) if ok else None


def _accuracy(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "not recorded"


def describe(result):
    """One line for a result, of this repo or of the classic one (no test accuracy, no epochs)."""
    if result.get("status") != STATUS_OK:
        return f"failed: {result.get('error', 'no reason recorded')}"
    pruned = f" (pruned at epoch {result.get('pruned_at_epoch')})" if result.get("pruned") else ""
    on_test = " (measured on the test set)" if selected_on(result) == "test" else ""
    name = result.get("model_name", "unnamed model")
    return (f"{name}: val fine accuracy {_accuracy(result.get('fine_best_accuracy'))}{on_test}, "
            f"test fine accuracy: {_accuracy(result.get('fine_test_accuracy'))}{pruned}")


def load_best_result(results_dir=RESULTS_DIR):
    """The result with the highest validation fine accuracy in results_dir (None: there is none).

    A file without an accuracy in its name, unreadable, or without a hyperspace (a copy cut short, a
    hand-edited file) is skipped with one line on stderr: the next best is used, not a crash.
    """
    ranked = []
    for path in glob.glob(os.path.join(glob.escape(results_dir), "model_*" + SUFFIX)):
        name = os.path.basename(path)
        try:  # by the accuracy in the name: classic files wrote it with varying digits
            accuracy = float(name.split("_")[1])
        except ValueError:
            accuracy = math.nan
        if not math.isfinite(accuracy):
            print(f"warning: skipped {path}: no accuracy in its name "
                  f"(model_<accuracy>_<id>{SUFFIX})", file=sys.stderr)
            continue
        ranked.append((accuracy, path))
    for _, path in sorted(ranked, reverse=True):
        try:
            result = utils.load_json_file(path)
            if not isinstance(result, dict) or not isinstance(result.get("space"), dict):
                raise ValueError('no "space" object in it')
        except (OSError, ValueError) as e:
            print(f"warning: skipped {path}: not a result with a hyperspace ({type(e).__name__}: "
                  f"{e}); using the next best".replace("\n", " "), file=sys.stderr)
            continue
        return result
    return None
