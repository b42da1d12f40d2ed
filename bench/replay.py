"""Replay the stopping rules on the learning curves of a finished search: what each would have
saved, and whether it would have kept the best model.

    python3 bench/replay.py RESULTS_DIR [--trials-file FILE] [--orders N] [--seed S] [--json OUT]

Reads every result file in RESULTS_DIR with a per-epoch validation history (this project's
`val_fine_outputs_accuracy`, or the classic Keras 2 `val_fine_outputs_acc`). The search's order is
that of the trials file's tids (results matched by model name), else that of the result files'
trial ids, else of their file names (the output says which). Each trial is fed to a rule epoch by
epoch and judged against the trials before it, as in a search run one trial at a time; a trial
stopped early has its best accuracy up to there. The rules: none; ours at their defaults (and a
few other settings), fed each epoch as real trials feed them (pruning.py) on a hyperopt Trials
object; and Optuna's pruners at the same settings (same first rung and eta, same warm-up),
through ask/report/should_prune/tell. Optuna's Hyperband puts a trial in a bracket by a hash of
the study's name: the search's order is replayed under 20 study names (their mean is shown), and
random order k under name k mod 20 (orders drawn by numpy's default_rng(seed).permutation).

For each rule: the share of epochs saved and the regret (best of all trials minus best found) in
the search's order; then over N random orders of the same trials (seeded): the mean share saved, the
share of orders that keep the best model, and the mean and worst regret. A replay cannot show how
stopping changes what the search proposes next (TPE learns from the trials it sees end).
"""
import argparse
import contextlib
import glob
import io
import json
import os
import pickle
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # pruning.py loads Keras: no start-up INFO lines
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pruning import (PRUNE_MIN_TRIALS, CurveRule, MedianStoppingRule,  # noqa: E402
                     chosen_rule, prune_warmup, stopping_rule)
from record import CLASSIC_METRIC, METRIC  # noqa: E402
from settings import DEFAULTS  # noqa: E402

CLASSIC_VALIDATION = 10000  # the classic repo selected its models on the CIFAR-100 test set
HYPERBAND_NAMES = 20


class ReplayError(Exception):
    """What the command reports in one line."""


# --- Reading a search ---------------------------------------------------------------------------

def curve_of(result):
    """The per-epoch validation fine accuracies of a result (either key style); None if none."""
    history = result.get("history") or {}
    curve = history.get(METRIC) or history.get(CLASSIC_METRIC)
    return [float(a) for a in curve] if curve else None


def validation_size(results):
    """The images the search selected its models on, as its results recorded it (the fewest, if they
    differ); the classic repo's results (Keras 2 history names) selected on the 10,000 test images."""
    sizes = [r.get("validation_size") if isinstance(r.get("validation_size"), int) else
             CLASSIC_VALIDATION if CLASSIC_METRIC in (r.get("history") or {}) else None for r in results]
    return None if None in sizes else min(sizes)


def load_search(results_dir, trials_file=None):
    """The learning curves of a finished search in its order: (file names, curves, how the order
    was found, the images its models were selected on)."""
    if not os.path.isdir(results_dir):
        raise ReplayError(f"no folder {results_dir}: give the results folder of a finished search")
    found = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError):
            continue  # not a result file
        curve = curve_of(result) if isinstance(result, dict) else None
        if curve:
            found[os.path.basename(path)] = (result, curve)
    if not found:
        raise ReplayError(f"no result file with a per-epoch validation history ({METRIC} or "
                          f"{CLASSIC_METRIC}) in {results_dir}")
    names = sorted(found)
    if trials_file:
        try:
            with open(trials_file, "rb") as f:
                trials = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise ReplayError(f"cannot read the trials file {trials_file} ({e}): give a hyperopt "
                              f"results.pkl") from e
        tid_of = {t["result"].get("model_name"): t["tid"] for t in trials.trials
                  if isinstance(t.get("result"), dict)}
        missing = [n for n in names if found[n][0].get("model_name") not in tid_of]
        if missing:
            raise ReplayError(f"{len(missing)} result files are not in {trials_file} (e.g. "
                              f"{missing[0]}): give the trials file of the same search, or none")
        names.sort(key=lambda n: tid_of[found[n][0]["model_name"]])
        order = f"the tids of {trials_file}"
    elif all(isinstance(found[n][0].get("trial_id"), int) for n in names):
        names.sort(key=lambda n: found[n][0]["trial_id"])
        order = "the result files' trial ids"
    else:
        order = "file names (no trials file, no trial ids)"
    return names, [found[n][1] for n in names], order, validation_size([found[n][0] for n in names])


# --- Replaying one order -------------------------------------------------------------------------

def replay_ours(curves, make_rule, budget=None):
    """Epochs each trial runs (None for a trial without a curve) under our rules,
    make_rule(trials, tid) -> a rule (pruning.py) or None, judging against the trials before it, recorded as the
    search records them."""
    from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_OK, Trials

    trials, ran = Trials(), []
    for curve in curves:
        if curve is None:
            ran.append(None)
            continue
        tid = trials.new_trial_ids(1)[0]
        doc = trials.new_trial_docs([tid], [None], [{"status": "new"}],
                                    [{"tid": tid, "cmd": None, "idxs": {}, "vals": {}}])[0]
        doc["state"] = JOB_STATE_RUNNING
        trials.insert_trial_docs([doc])
        trials.refresh()
        rule = make_rule(trials, tid)
        epochs = 0
        for epochs, accuracy in enumerate(curve, 1):
            with contextlib.redirect_stdout(io.StringIO()):  # its "Pruned at epoch" lines
                goes_on = rule is None or rule.report(epochs, accuracy)
            if not goes_on:
                break
        doc = next(t for t in trials._dynamic_trials if t["tid"] == tid)
        doc["result"] = {"status": STATUS_OK, "loss": -max(curve[:epochs]),
                         "pruned": epochs < len(curve), "history": {METRIC: list(curve[:epochs])}}
        doc["state"] = JOB_STATE_DONE
        trials.refresh()
        ran.append(epochs)
    return ran


def replay_optuna(make_pruner, curves, study_name="replay"):
    """Epochs each trial runs under an Optuna pruner: ask, report the best so far at step = epoch,
    should_prune."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A fixed sampler; and a name: Hyperband puts a trial in a bracket by a hash of it and a number.
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=make_pruner(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    ran = []
    for curve in curves:
        if curve is None:
            ran.append(None)
            continue
        trial, best, epochs = study.ask(), -1.0, 0
        for epochs, accuracy in enumerate(curve, start=1):
            best = max(best, accuracy)
            trial.report(best, epochs)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, best)
        ran.append(epochs)
    return ran


# --- The rules ----------------------------------------------------------------------------------

def our_rule(prune, budget, **settings):
    """make_rule of pruning.stopping_rule at the search's default settings (changed by
    `settings`)."""
    settings = DEFAULTS.replace(prune=prune, epochs=budget, **settings)
    return lambda trials, tid: stopping_rule(settings, trials, tid)


def rules_for(budget, validation=None):
    """name -> (replay(curves, k): epochs run per trial, under study name k for Optuna's Hyperband;
    whether it is the search's default, for a search selecting on `validation` images). Ours at
    their defaults, a few other settings of them, and
    Optuna's pruners at the same settings as ours."""
    import optuna

    pruners = optuna.pruners
    eta, first = DEFAULTS.prune_eta, DEFAULTS.prune_min_epochs
    warmup, tenth = prune_warmup(budget), max(1, budget // 10)
    default = chosen_rule(DEFAULTS.prune, validation)

    def ours(make_rule):
        return lambda curves, k: replay_ours(curves, make_rule)

    def theirs(make_pruner, by_name=False):
        return lambda curves, k: replay_optuna(
            make_pruner, curves, f"replay-{k % HYPERBAND_NAMES}" if by_name else "replay")

    def curve(**changes):
        return ours(lambda trials, tid: CurveRule(trials, budget, tid, **changes))

    rules = {"none": (lambda curves, k: [None if c is None else len(c) for c in curves],
                      default == "none")}
    for prune in ("median", "asha", "curve"):
        rules[prune] = (ours(our_rule(prune, budget)), default == prune)
    rules.update({
        "median, running averages (Vizier)": (ours(
            lambda trials, tid: MedianStoppingRule(trials, budget, running_average=True)), False),
        f"asha, first rung {tenth}": (ours(our_rule("asha", budget, prune_min_epochs=tenth)),
                                      False),
        "curve, no slowdown": (curve(slowdown=1.0), False),
        "curve, slowdown 1/2": (curve(slowdown=0.5), False),
        f"curve, warm-up {warmup}": (curve(warmup=warmup), False),
        f"optuna MedianPruner({PRUNE_MIN_TRIALS}, {warmup})": (
            theirs(lambda: pruners.MedianPruner(PRUNE_MIN_TRIALS, warmup)), False),
        f"optuna SuccessiveHalvingPruner({first}, {eta})": (
            theirs(lambda: pruners.SuccessiveHalvingPruner(first, eta)), False),
        f"optuna SuccessiveHalvingPruner({tenth}, {eta})": (
            theirs(lambda: pruners.SuccessiveHalvingPruner(tenth, eta)), False),
        f"optuna HyperbandPruner({first}, {budget}, {eta})": (
            theirs(lambda: pruners.HyperbandPruner(first, budget, eta), by_name=True), False),
    })
    return rules


def outcome(curves, ran):
    """(epochs run, best accuracy found) of one replay."""
    done = [(c, n) for c, n in zip(curves, ran) if c is not None]
    return sum(n for _, n in done), max(max(c[:n]) for c, n in done)


def replay_all(curves, orders=200, seed=0, rules=None, validation=None):
    """The figures of every rule: the search's order, then `orders` random orders (seeded)."""
    budget = max(len(c) for c in curves)
    total, best = sum(len(c) for c in curves), max(max(c) for c in curves)
    rules = rules or rules_for(budget, validation)
    rng = np.random.default_rng(seed)
    shuffles = [rng.permutation(len(curves)) for _ in range(orders)]
    rows = []
    for name, (replay, is_default) in rules.items():
        names_in_order = HYPERBAND_NAMES if name.startswith("optuna Hyperband") else 1
        in_order = [outcome(curves, replay(curves, k)) for k in range(names_in_order)]
        shuffled = [outcome([curves[i] for i in order], replay([curves[i] for i in order], k))
                    for k, order in enumerate(shuffles)]
        regrets = [best - found for _, found in shuffled]
        rows.append({"rule": name, "default": is_default,
                     "saved_in_order": 1 - float(np.mean([e for e, _ in in_order])) / total,
                     "regret_in_order": float(np.mean([best - found for _, found in in_order])),
                     "saved_mean": 1 - float(np.mean([e for e, _ in shuffled])) / total,
                     "best_kept": float(np.mean([r == 0 for r in regrets])),
                     "regret_mean": float(np.mean(regrets)),
                     "regret_worst": float(max(regrets))})
    return {"trials": len(curves), "epochs": total, "best": best, "rules": rows}


def table(figures, orders, order, validation=None):
    """The printed table."""
    chosen = chosen_rule(DEFAULTS.prune, validation)
    selected = f"{validation:,} validation images" if validation else "validation images not recorded"
    lines = [f"{figures['trials']} trials, {figures['epochs']} epochs, best validation accuracy "
             f"{figures['best']:.4f}; search order: {order}; {orders} random orders; {selected}: "
             f"--prune {DEFAULTS.prune} is {chosen} here.",
             "saved: share of the epochs not trained; regret: best of all trials minus best found; "
             "best kept: share of the random orders that keep the best model."]
    width = max(len(r["rule"]) for r in figures["rules"]) + 2
    lines.append(f"{'rule':<{width}} {'in order: saved':>15} {'regret':>7}   {'random: saved':>13} "
                 f"{'best kept':>9} {'regret mean':>11} {'worst':>7}")
    for r in figures["rules"]:
        name = r["rule"] + (" *" if r["default"] else "")
        lines.append(f"{name:<{width}} {r['saved_in_order']:>15.1%} {r['regret_in_order']:>7.4f}   "
                     f"{r['saved_mean']:>13.1%} {r['best_kept']:>9.1%} {r['regret_mean']:>11.4f} "
                     f"{r['regret_worst']:>7.4f}")
    lines.append("* the search's default rule (--prune)")
    return "\n".join(lines)


def rounded(figures):
    """The JSON figures, fractions to 4 digits."""
    return {**figures, "best": round(figures["best"], 4),
            "rules": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                      for r in figures["rules"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", metavar="RESULTS_DIR",
                   help="the result files of a finished search")
    p.add_argument("--trials-file", help="its trials file (results.pkl): the order the trials ran")
    p.add_argument("--orders", type=int, default=200,
                   help="random orders to replay (default %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random orders (default %(default)s)")
    p.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.orders < 1:
        p.error("--orders must be 1 or more")
    try:
        _, curves, order, validation = load_search(args.results_dir, args.trials_file)
    except ReplayError as e:
        sys.exit(f"error: {e}")
    figures = rounded(replay_all(curves, args.orders, args.seed, validation=validation))
    print(table(figures, args.orders, order, validation))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
