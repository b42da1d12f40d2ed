"""Stopping rules: end a trial early when it falls behind the others, so the search spends its
epochs on good ones.

Every rule has one interface: after each epoch the trial reports its validation fine accuracy,
`rule.report(epoch, accuracy)`, and the rule answers whether the trial goes on. A trial stopped is
recorded as pruned (`pruned_at_epoch`), with its honest (low) accuracy as its loss for TPE. Real
trials report from a Keras callback (trial.py), bench/replay.py from recorded curves. Rules judge
against hyperopt's ctrl.trials, so on MongoDB workers they see what every worker recorded.

    median  MedianStoppingRule: after a warm-up, stop a trial that is below the median of the
            trials that ran to the end, at the same epoch
    asha    AshaRule: asynchronous successive halving; at rungs of min_epochs * eta**k epochs, only
            the top 1/eta of the trials that reached the rung (finished, pruned or running) go on
    auto    curve where the trials select on 2,000 validation images or more, median otherwise
    curve   CurveRule: project the trial's learning curve to the budget, each further doubling of
            epochs gaining at most 1/sqrt(2) of the one before; stop it once that cannot reach
            the best accuracy any trial reached (finished, pruned or running)

A running trial publishes its accuracies so far as a partial result (`partial_result`), which
objective.py checkpoints once an epoch: hyperopt stores it in the trial (in the MongoDB document on
workers), so workers judge against each other's trials in flight. A partial result has status
"running" and no "loss": TPE reads the loss of every trial it sees, and scores a trial without one
as infinitely bad, as it does any running trial; the report and best_result read only status "ok".
"""
import math
import statistics

from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_OK, STATUS_RUNNING

from record import METRIC, running_result

# the median stopping rule needs this many trials run to the end to judge an epoch
PRUNE_MIN_TRIALS = 5


def prune_warmup(epochs_budget):
    """Epochs a trial always runs: learning curves cross early (slow starters: small learning rates,
    large batches), so a tenth of the budget, and at least 2."""
    return max(2, epochs_budget // 10)


def accuracy_by(result, epoch):
    """Best validation fine accuracy of a (partial) result within its first `epoch` epochs; None if
    it ran fewer."""
    accuracy = result.get("history", {}).get(METRIC, [])
    return max(accuracy[:epoch]) if len(accuracy) >= epoch else None


def best_by_epoch(trials, epoch, count_pruned=False, running_average=False):
    """Best validation fine accuracy within their first `epoch` epochs, of the finished trials that
    ran to the end.

    Pruned trials do not count: they are the trials that were behind, and counting them for the
    epochs they ran pulls the median down, so that fewer trials are pruned (the median stopping
    rule of Vizier, and Optuna's MedianPruner, compare with completed trials only).
    count_pruned=True counts them (bench/replay.py replays both). running_average=True: their mean
    accuracy over those epochs instead, as Vizier's rule reads them (bench/README.md compares the
    two).
    """
    if on_mongodb(trials):  # read the one series judged by, of the trials that count
        import mongo_search
        curves = mongo_search.recorded_curves(trials, running=False, pruned=count_pruned,
                                              reached=epoch)
        return [statistics.fmean(c[:epoch]) if running_average else max(c[:epoch]) for c in curves]
    trials.refresh()  # local Trials: cheap
    reached = []
    for trial in trials.trials:
        result = trial["result"]
        if trial["state"] == JOB_STATE_DONE and result.get("status") == STATUS_OK and (
                count_pruned or not result.get("pruned")):
            accuracy = accuracy_by(result, epoch)
            if accuracy is not None:
                history = result["history"][METRIC]
                reached.append(statistics.fmean(history[:epoch]) if running_average else accuracy)
    return reached


class Rule:
    """What every stopping rule shares: the trial reports its validation fine accuracy after each
    epoch (report), the rule answers whether it goes on, and says why it stops (stop_reason, each
    rule's own). `publishes`: the rule judges against running trials, so a running trial publishes
    its accuracies so far (partial_result) for the others to read."""

    publishes = False

    def __init__(self, trials, epochs_budget, this_tid=None):
        self.trials, self.epochs_budget, self.this_tid = trials, epochs_budget, this_tid
        self.accuracy, self.pruned_at_epoch = [], None

    def report(self, epoch, accuracy):
        """The trial's validation fine accuracy at `epoch` (1, 2, ...): True if the trial goes
        on."""
        self.accuracy.append(float(accuracy))
        if epoch >= self.epochs_budget:
            return True  # the last epoch: stopping saves nothing
        try:
            reason = self.stop_reason(epoch)
        # an unreachable database must not fail the trial
        except Exception as e:  # noqa: BLE001
            print(f"Pruning skipped at epoch {epoch}: cannot read the trials "
                  f"({type(e).__name__}: {e})")
            return True
        if reason is None:
            return True
        print(f"Pruned at epoch {epoch}: {reason}", flush=True)
        self.pruned_at_epoch = epoch
        return False

    def partial_result(self):
        """What the running trial publishes: its accuracies so far, status running."""
        return running_result(self.accuracy)


class MedianStoppingRule(Rule):
    """Stop a trial whose best validation fine accuracy so far is below the median of what the
    trials that ran to the end had reached by the same epoch (the median stopping rule of Google
    Vizier, Golovin et al. 2017). Pruned trials do not count (best_by_epoch)."""

    def __init__(self, trials, epochs_budget, this_tid=None, count_pruned=False,
                 running_average=False):
        super().__init__(trials, epochs_budget, this_tid)
        self.count_pruned, self.running_average = count_pruned, running_average

    def stop_reason(self, epoch):
        if epoch < prune_warmup(self.epochs_budget):
            return None
        reached = best_by_epoch(self.trials, epoch, self.count_pruned, self.running_average)
        best, median = max(self.accuracy), statistics.median(reached or [0])
        if len(reached) < PRUNE_MIN_TRIALS or best >= median:
            return None
        return (f"best validation fine accuracy {best:.4f} is below the median {median:.4f} of "
                f"{len(reached)} finished trials at that epoch")


def asha_rungs(epochs_budget, min_epochs=1, eta=3):
    """The rung epochs min_epochs * eta**k, k = 0, 1, ..., below the budget (a stop at the last
    epoch saves nothing)."""
    rungs, epoch = [], min_epochs
    while epoch < epochs_budget:
        rungs.append(epoch)
        epoch *= eta
    return rungs


def recorded_results(trials, this_tid):
    """The results of every other trial, refreshed: finished or pruned (status ok), or running (its
    partial result, while its job runs: a job requeued after its worker died is new again, and the
    partial result of its dead run does not count); not failed trials."""
    trials.refresh()
    results = []
    for trial in trials.trials:
        result = trial["result"]
        if trial["tid"] == this_tid:
            continue
        if (result.get("status") == STATUS_OK and trial["state"] == JOB_STATE_DONE) or (
                result.get("status") == STATUS_RUNNING and trial["state"] == JOB_STATE_RUNNING):
            results.append(result)
    return results


def on_mongodb(trials):
    """Whether `trials` are hyperopt's MongoTrials: the rules then read only what they judge by."""
    return getattr(trials, "handle", None) is not None


def at_rung(trials, epoch, this_tid):
    """Best validation fine accuracy by `epoch` of every other trial that got that far, whatever is
    recorded: finished, pruned, or running (its partial result); not failed trials."""
    if on_mongodb(trials):
        import mongo_search
        curves = mongo_search.recorded_curves(trials, this_tid, reached=epoch)
        return [max(c[:epoch]) for c in curves]
    reached = (accuracy_by(result, epoch) for result in recorded_results(trials, this_tid))
    return [accuracy for accuracy in reached if accuracy is not None]


def asha_goes_on(accuracy, others, eta):
    """Whether a trial at a rung is in the top 1/eta of the n trials there, itself included: at
    least max(1, n // eta) go on, so the first trials at a rung, with nothing or too little to
    compare against, go on if none there is better. Ties go on. (Successive halving promotes the
    top 1/eta.)"""
    keep = max(1, (len(others) + 1) // eta)
    return sum(other > accuracy for other in others) < keep


class AshaRule(Rule):
    """Asynchronous successive halving (Li et al., MLSys 2020), stopping form: at each rung epoch
    (asha_rungs), a trial goes on only if its best validation fine accuracy so far is in the top
    1/eta of all trials that reached the rung, running ones by their partial result."""

    publishes = True

    def __init__(self, trials, epochs_budget, this_tid=None, min_epochs=1, eta=3):
        super().__init__(trials, epochs_budget, this_tid)
        self.eta, self.rungs = eta, asha_rungs(epochs_budget, min_epochs, eta)

    def stop_reason(self, epoch):
        if epoch not in self.rungs:
            return None
        best, others = max(self.accuracy), at_rung(self.trials, epoch, self.this_tid)
        if asha_goes_on(best, others, self.eta):
            return None
        return (f"best validation fine accuracy {best:.4f} is not in the top 1/{self.eta} of the "
                f"{len(others) + 1} trials at that rung")


CURVE_WARMUP = 3  # the first epoch with two doublings of the curve to compare: epochs 1-2 and 2-3
CURVE_SLOWDOWN = 2 ** -0.5  # each doubling of epochs gains at most this much of the one before


def curve_bound(accuracy, epochs_budget, slowdown=CURVE_SLOWDOWN, warmup=CURVE_WARMUP):
    """The most a learning curve (validation accuracies, epoch by epoch) is expected to reach by the
    budget: its best so far, plus, for each remaining doubling of epochs, `slowdown` times the gain
    of the doubling before it, starting from its last doubling's gain (epochs e/2 to e).

    A slowdown of 1/sqrt(2) per doubling is an error falling as epochs**-1/2, the slowest rate of
    stochastic gradient descent (on convex problems); curves that bend faster are overestimated, so
    the bound errs towards training on. A curve still speeding up (its last doubling gained more
    than the one before: a slow starter taking off) gets no bound (None), nor one before `warmup`
    epochs (at least CURVE_WARMUP).
    """
    epoch = len(accuracy)
    if epoch < max(warmup, CURVE_WARMUP):
        return None
    best = [max(accuracy[:e]) for e in range(1, epoch + 1)]
    half = (epoch + 1) // 2
    quarter = (half + 1) // 2
    gain, gain_before = best[-1] - best[half - 1], best[half - 1] - best[quarter - 1]
    if gain > gain_before:
        return None
    doublings = math.log2(epochs_budget / epoch)  # left to the budget, a fraction of one included
    if slowdown >= 1:
        return best[-1] + gain * doublings
    return best[-1] + gain * slowdown * (1 - slowdown ** doublings) / (1 - slowdown)


def best_reached(trials, this_tid):
    """The best validation fine accuracy any other trial reached: finished, pruned or running
    (None: none yet)."""
    if on_mongodb(trials):
        import mongo_search
        return mongo_search.best_reached(trials, this_tid)
    reached = [max(r["history"][METRIC]) for r in recorded_results(trials, this_tid)
               if r.get("history", {}).get(METRIC)]
    return max(reached, default=None)


class CurveRule(Rule):
    """Stop a trial once its learning curve, projected to the budget (curve_bound), cannot reach the
    best validation fine accuracy any other trial reached, running ones by their partial result
    (Domhan et al. 2015 stop on an extrapolation of the curve too). A slow starter whose curve is
    still steepening is not judged."""

    publishes = True

    def __init__(self, trials, epochs_budget, this_tid=None, slowdown=CURVE_SLOWDOWN,
                 warmup=CURVE_WARMUP):
        super().__init__(trials, epochs_budget, this_tid)
        self.slowdown, self.warmup = slowdown, warmup

    def stop_reason(self, epoch):
        bound = curve_bound(self.accuracy, self.epochs_budget, self.slowdown, self.warmup)
        if bound is None:
            return None  # too early, or still speeding up
        best = best_reached(self.trials, self.this_tid)
        if best is None or bound >= best:
            return None
        return (f"its learning curve projects to at most {bound:.4f} by epoch "
                f"{self.epochs_budget}, below the best validation fine accuracy reached, "
                f"{best:.4f}")


# --prune auto projects learning curves (curve) only where the validation accuracy is precise
# enough for their bends to be real: from 2,000 images its standard error is at most 0.011
# (0.5 / sqrt(2000)), below the gains per doubling of epochs the projection extends. On fewer,
# epoch-to-epoch noise looks like a bend (bench/README.md: 600 images, 0.02), and the median rule,
# which needs no projection, judges.
AUTO_MIN_VALIDATION = 2000


def chosen_rule(prune, validation_size):
    """The rule --prune names; for auto, curve where the trials select on AUTO_MIN_VALIDATION
    images or more, median where on fewer or where the number is unknown."""
    if prune != "auto":
        return prune
    return "curve" if (validation_size or 0) >= AUTO_MIN_VALIDATION else "median"


def stopping_rule(settings, trials, this_tid=None, validation_size=None):
    """The rule that settings.prune names (None for none), judging against `trials`;
    validation_size: the images the trial selects on (what auto chooses by)."""
    prune = chosen_rule(settings.prune, validation_size)
    if prune == "median":
        return MedianStoppingRule(trials, settings.epochs, this_tid)
    if prune == "asha":
        return AshaRule(trials, settings.epochs, this_tid, settings.prune_min_epochs,
                        settings.prune_eta)
    if prune == "curve":
        return CurveRule(trials, settings.epochs, this_tid)
    return None
