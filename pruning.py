"""Stopping rules: end a trial early when it falls behind the others, so the search spends its epochs on good ones.

A rule is a Keras callback that sets model.stop_training and records `pruned_at_epoch`; the trial is
then recorded as pruned, with its honest (low) accuracy as its loss for TPE. Rules judge against
hyperopt's ctrl.trials, so on MongoDB workers they see what every worker finished.
"""
import statistics

import keras
from hyperopt import JOB_STATE_DONE, STATUS_OK

PRUNE_MIN_TRIALS = 5  # the median stopping rule needs this many finished trials at an epoch to judge it
METRIC = "val_fine_outputs_accuracy"  # what the search maximizes, as Keras names it in the history


def prune_warmup(epochs_budget):
    """Epochs a trial always runs: learning curves cross early (slow starters: small learning rates,
    large batches), so a tenth of the budget, and at least 2."""
    return max(2, epochs_budget // 10)


def best_by_epoch(trials, epoch):
    """Best validation fine accuracy within their first `epoch` epochs, of the finished trials that ran that far."""
    trials.refresh()  # MongoTrials: read what the other workers finished; local Trials: cheap
    reached = []
    for trial in trials.trials:
        accuracy = trial["result"].get("history", {}).get(METRIC, [])
        if trial["state"] == JOB_STATE_DONE and trial["result"].get("status") == STATUS_OK and len(accuracy) >= epoch:
            reached.append(max(accuracy[:epoch]))
    return reached


class MedianStoppingRule(keras.callbacks.Callback):
    """Stop a trial whose best validation fine accuracy so far is below the median of what the finished
    trials had reached by the same epoch (the median stopping rule of Google Vizier, Golovin et al. 2017).

    `trials` is hyperopt's ctrl.trials, so a MongoDB worker judges against what every worker finished.
    Pruned trials count too, for the epochs they ran. The trial keeps its honest (low) loss for TPE.
    """

    def __init__(self, trials, epochs_budget):
        super().__init__()
        self.trials, self.epochs_budget = trials, epochs_budget
        self.best, self.pruned_at_epoch = -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        self.best = max(self.best, logs[METRIC])
        done = epoch + 1
        if done < prune_warmup(self.epochs_budget) or done >= self.epochs_budget:
            return  # still warming up, or the last epoch, where stopping saves nothing
        try:
            reached = best_by_epoch(self.trials, done)
        except Exception as e:  # noqa: BLE001 -- an unreachable database must not fail the trial: train on
            print(f"Pruning skipped at epoch {done}: cannot read the finished trials ({type(e).__name__}: {e})")
            return
        if len(reached) >= PRUNE_MIN_TRIALS and self.best < statistics.median(reached):
            print(f"Pruned at epoch {done}: best validation fine accuracy {self.best:.4f} is below the median "
                  f"{statistics.median(reached):.4f} of {len(reached)} finished trials at that epoch", flush=True)
            self.pruned_at_epoch = done
            self.model.stop_training = True


def stopping_rules(settings, trials):
    """The callbacks of the stopping rule that settings[\"prune\"] names, judging against `trials`."""
    if settings.get("prune", "none") == "median":
        return [MedianStoppingRule(trials, settings["epochs"])]
    return []
