"""Stopping rules: end a trial early when it falls behind the others, so the search spends its epochs on good ones.

A rule is a Keras callback that sets model.stop_training and records `pruned_at_epoch`; the trial is
then recorded as pruned, with its honest (low) accuracy as its loss for TPE. Rules judge against
hyperopt's ctrl.trials, so on MongoDB workers they see what every worker recorded.

    median  MedianStoppingRule: after a warm-up, stop a trial that is below the median of the
            trials that ran to the end, at the same epoch
    asha    AshaRule: asynchronous successive halving; at rungs of min_epochs * eta**k epochs, only
            the top 1/eta of the trials that reached the rung (finished, pruned or running) go on

A running trial publishes its accuracies so far as a partial result (`partial_result`), which
objective.py checkpoints once an epoch: hyperopt stores it in the trial (in the MongoDB document on
workers), so workers judge against each other's trials in flight. A partial result has status
"running" and no "loss": TPE reads the loss of every trial it sees, and scores a trial without one
as infinitely bad, as it does any running trial; the report and best_result read only status "ok".
"""
import statistics

import keras
from hyperopt import JOB_STATE_DONE, JOB_STATE_ERROR, STATUS_OK, STATUS_RUNNING

PRUNE_MIN_TRIALS = 5  # the median stopping rule needs this many trials run to the end to judge an epoch
METRIC = "val_fine_outputs_accuracy"  # what the search maximizes, as Keras names it in the history


def prune_warmup(epochs_budget):
    """Epochs a trial always runs: learning curves cross early (slow starters: small learning rates,
    large batches), so a tenth of the budget, and at least 2."""
    return max(2, epochs_budget // 10)


def accuracy_by(result, epoch):
    """Best validation fine accuracy of a (partial) result within its first `epoch` epochs; None if it ran fewer."""
    accuracy = result.get("history", {}).get(METRIC, [])
    return max(accuracy[:epoch]) if len(accuracy) >= epoch else None


def best_by_epoch(trials, epoch, count_pruned=False):
    """Best validation fine accuracy within their first `epoch` epochs, of the finished trials that ran to the end.

    Pruned trials do not count: they are the trials that were behind, and counting them for the
    epochs they ran pulls the median down, so that fewer trials are pruned (the median stopping
    rule of Vizier, and Optuna's MedianPruner, compare with completed trials only). count_pruned=True
    counts them, as this rule did before (bench/search_efficiency.py replays both).
    """
    trials.refresh()  # MongoTrials: read what the other workers finished; local Trials: cheap
    reached = []
    for trial in trials.trials:
        result = trial["result"]
        if trial["state"] == JOB_STATE_DONE and result.get("status") == STATUS_OK and (
                count_pruned or not result.get("pruned")):
            accuracy = accuracy_by(result, epoch)
            if accuracy is not None:
                reached.append(accuracy)
    return reached


class MedianStoppingRule(keras.callbacks.Callback):
    """Stop a trial whose best validation fine accuracy so far is below the median of what the trials that
    ran to the end had reached by the same epoch (the median stopping rule of Google Vizier, Golovin et al. 2017).

    `trials` is hyperopt's ctrl.trials, so a MongoDB worker judges against what every worker finished.
    Pruned trials do not count (best_by_epoch). The trial keeps its honest (low) loss for TPE.
    """

    def __init__(self, trials, epochs_budget, count_pruned=False):
        super().__init__()
        self.trials, self.epochs_budget, self.count_pruned = trials, epochs_budget, count_pruned
        self.best, self.pruned_at_epoch = -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        self.best = max(self.best, logs[METRIC])
        done = epoch + 1
        if done < prune_warmup(self.epochs_budget) or done >= self.epochs_budget:
            return  # still warming up, or the last epoch, where stopping saves nothing
        try:
            reached = best_by_epoch(self.trials, done, self.count_pruned)
        except Exception as e:  # noqa: BLE001 -- an unreachable database must not fail the trial: train on
            print(f"Pruning skipped at epoch {done}: cannot read the finished trials ({type(e).__name__}: {e})")
            return
        if len(reached) >= PRUNE_MIN_TRIALS and self.best < statistics.median(reached):
            print(f"Pruned at epoch {done}: best validation fine accuracy {self.best:.4f} is below the median "
                  f"{statistics.median(reached):.4f} of {len(reached)} finished trials at that epoch", flush=True)
            self.pruned_at_epoch = done
            self.model.stop_training = True


def asha_rungs(epochs_budget, min_epochs=1, eta=3):
    """The rung epochs min_epochs * eta**k, k = 0, 1, ..., below the budget (a stop at the last epoch saves nothing)."""
    rungs, epoch = [], min_epochs
    while epoch < epochs_budget:
        rungs.append(epoch)
        epoch *= eta
    return rungs


def at_rung(trials, epoch, this_tid):
    """Best validation fine accuracy by `epoch` of every other trial that got that far, whatever is recorded:
    finished, pruned, or running (its partial result); not failed trials."""
    trials.refresh()
    reached = []
    for trial in trials.trials:
        result = trial["result"]
        if trial["tid"] == this_tid or trial["state"] == JOB_STATE_ERROR:
            continue
        if result.get("status") in (STATUS_OK, STATUS_RUNNING):
            accuracy = accuracy_by(result, epoch)
            if accuracy is not None:
                reached.append(accuracy)
    return reached


def asha_goes_on(accuracy, others, eta):
    """Whether a trial at a rung is in the top 1/eta of the n trials there, itself included: at least
    max(1, n // eta) go on, so the first trials at a rung, with nothing or too little to compare
    against, go on if none there is better. Ties go on. (Successive halving promotes the top 1/eta.)"""
    keep = max(1, (len(others) + 1) // eta)
    return sum(other > accuracy for other in others) < keep


class AshaRule(keras.callbacks.Callback):
    """Asynchronous successive halving (Li et al., MLSys 2020), stopping form: at each rung epoch
    (asha_rungs), a trial goes on only if its best validation fine accuracy so far is in the top 1/eta
    of all trials that reached the rung, read from `trials` (hyperopt's ctrl.trials: every worker's
    trials on MongoDB, running ones by their partial result). Otherwise it stops, recorded as pruned
    with its honest loss. `this_tid`: the trial's own id, so that its own partial result is not counted.
    """

    def __init__(self, trials, epochs_budget, this_tid=None, min_epochs=1, eta=3):
        super().__init__()
        self.trials, self.this_tid, self.eta = trials, this_tid, eta
        self.rungs = asha_rungs(epochs_budget, min_epochs, eta)
        self.accuracy, self.pruned_at_epoch = [], None

    def partial_result(self):
        """What the running trial publishes (objective.py checkpoints it each epoch): its accuracies so far."""
        return {"status": STATUS_RUNNING, "history": {METRIC: list(self.accuracy)}}

    def on_epoch_end(self, epoch, logs=None):
        self.accuracy.append(float(logs[METRIC]))
        done = epoch + 1
        if done not in self.rungs:
            return
        best = max(self.accuracy)
        try:
            others = at_rung(self.trials, done, self.this_tid)
        except Exception as e:  # noqa: BLE001 -- an unreachable database must not fail the trial: train on
            print(f"Pruning skipped at epoch {done}: cannot read the trials ({type(e).__name__}: {e})")
            return
        if not asha_goes_on(best, others, self.eta):
            print(f"Pruned at epoch {done}: best validation fine accuracy {best:.4f} is not in the top 1/{self.eta} "
                  f"of the {len(others) + 1} trials at that rung", flush=True)
            self.pruned_at_epoch = done
            self.model.stop_training = True


def stopping_rules(settings, trials, this_tid=None):
    """The callbacks of the stopping rule that settings[\"prune\"] names, judging against `trials`."""
    prune = settings.get("prune", "none")
    if prune == "median":
        return [MedianStoppingRule(trials, settings["epochs"])]
    if prune == "asha":
        return [AshaRule(trials, settings["epochs"], this_tid, settings["prune_min_epochs"], settings["prune_eta"])]
    return []
