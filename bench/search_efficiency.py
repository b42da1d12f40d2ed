"""The same seeded search with each stopping rule (none, median, curve): epochs, wall time, best model;
then every rule, ours and Optuna's pruners at the same settings, replayed on the learning curves of
the unpruned search (bench/replay.py replays any finished search, in random orders too).

    python3 bench/search_efficiency.py --data-dir ml_req      # the full run (bench/README.md quotes it)
    python3 bench/search_efficiency.py --quick --data-dir DIR # tiny, checks that it runs (CI)
    python3 bench/search_efficiency.py --replay-from WORK     # replay only, on a run kept with --work-dir WORK

It cuts a subset of real CIFAR-100 (every tenth fine class by default, the first training images of
each) into a temporary archive in the official format, then runs the real driver,
hyperopt_optimize.py, once per rule, same seed, one after the other. Models are selected on
validation images: the archive's test member holds the first --val-per-class test images of each
class (--validation test; the held-out split would keep a tenth of the few training images, too
few to rank models). The selected model of each search is then scored on the next --test-per-class
test images, which no search saw: the benchmark trains its hyperspace again, seeded, for its best
epoch, and checks that it reproduces the recorded validation accuracy.

TPE draws its first 20 trials at random, so every search trains the same first 20 models; pruning
decides how long each trains, and from then on TPE learns from what each search recorded.
Wall time includes each trial's model building and compilation, and the driver's start.

Replay: training is seeded, so the `none` search's curves are what every trial would have done.
Each rule is fed each trial's curve epoch by epoch, in trial order (the best validation accuracy so
far after epoch e is step e), and the epochs it lets run are counted. Our rules are replayed by their
own callbacks (pruning.py) on a hand-made hyperopt Trials; Optuna's by its ask/report/should_prune
interface with a fixed sampler, at our settings (asha's eta and first rung, the median rule's
warm-up). A rule that also ran for real is checked against that run.
"""
import argparse
import calendar
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data import DataError, load_dataset  # noqa: E402
from pruning import METRIC, PRUNE_MIN_TRIALS, prune_warmup  # noqa: E402
from replay import HYPERBAND_NAMES, our_rule, replay_optuna, replay_ours  # noqa: E402

RULES = ("none", "median", "curve")
GOOD = 0.01  # "a good model": within this of the unpruned search's best validation accuracy


def member(x, fine, coarse, classes, first, count):
    """Images first..first+count-1 of each given fine class, as an archive member (channels-first rows)."""
    keep = np.sort(np.concatenate([np.flatnonzero(fine == c)[first:first + count] for c in classes]))
    rows = x[keep].transpose(0, 3, 1, 2).reshape(len(keep), 3072)
    return {"data": rows, "fine_labels": fine[keep].tolist(), "coarse_labels": coarse[keep].tolist()}


def write_archive(folder, train, test, meta):
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(os.path.join(folder, "cifar-100-python.tar.gz"), "w:gz") as tar:
        for name, obj in (("train", train), ("test", test), ("meta", meta)):
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def write_subsets(data_dir, work, classes, train_per_class, val_per_class, test_per_class):
    """work/subset: the searches' archive (its test member: validation images); work/final: the same training
    images with the held-out test images. Real pixels and labels. Returns the three sizes."""
    ds = load_dataset("cifar100", data_dir)
    meta = {"fine_label_names": ds.fine_names, "coarse_label_names": ds.coarse_names}
    train = member(ds.x_train, ds.y_train_fine, ds.y_train_coarse, classes, 0, train_per_class)
    val = member(ds.x_test, ds.y_test_fine, ds.y_test_coarse, classes, 0, val_per_class)
    test = member(ds.x_test, ds.y_test_fine, ds.y_test_coarse, classes, val_per_class, test_per_class)
    write_archive(os.path.join(work, "subset"), train, val, meta)
    write_archive(os.path.join(work, "final"), train, test, meta)
    return len(train["fine_labels"]), len(val["fine_labels"]), len(test["fine_labels"])


def search(prune, args, subset_dir, work):
    """One search by the real driver; returns its trials, wall time and start time. Its output: work/<prune>.log."""
    out = os.path.join(work, prune)
    command = [sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), "--data-dir", subset_dir,
               "--epochs", str(args.epochs), "--max-evals", str(args.trials), "--seed", str(args.seed),
               "--prune", prune, "--validation", "test", "--results-dir", os.path.join(out, "results"),
               "--trials-file", os.path.join(out, "results.pkl")]
    print(f"$ python3 {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in command[1:])}",
          flush=True)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    with open(out + ".log", "w") as log:
        done = subprocess.run(command, cwd=out, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HKS_NO_DOWNLOAD": "1"})
    seconds = time.time() - start
    if done.returncode != 0:
        sys.exit(f"error: the {prune} search failed (exit {done.returncode}); its output is in {out}.log")
    with open(os.path.join(out, "results.pkl"), "rb") as f:
        return pickle.load(f).trials, seconds, start


def curves_of(trials):
    """Per trial, in order: its validation accuracies epoch by epoch (None for a failed trial)."""
    return [t["result"]["history"][METRIC] if t["result"]["status"] == "ok" else None for t in trials]


def summary(trials, seconds, start):
    ok = [t for t in trials if t["result"]["status"] == "ok"]
    best = max((t["result"] for t in ok), key=lambda r: r["fine_best_accuracy"])
    # When each trial ended, from the start of the driver: hyperopt stamps refresh_time (UTC) as a trial ends.
    ends = [calendar.timegm(t["refresh_time"].timetuple()) + t["refresh_time"].microsecond / 1e6 - start for t in ok]
    bests = np.maximum.accumulate([t["result"]["fine_best_accuracy"] for t in ok])
    return dict(trials=len(trials), pruned=sum(bool(t["result"].get("pruned")) for t in ok),
                failed=len(trials) - len(ok), epochs=sum(t["result"]["epochs_run"] for t in ok), seconds=seconds,
                best=best["fine_best_accuracy"], tid=best["trial_id"], space=best["space"],
                best_epoch=best["best_epoch"], ends=ends, bests=bests)


def time_to(row, target):
    """Wall seconds until the best so far reached target (None: never)."""
    reached = np.flatnonzero(row["bests"] >= target - 1e-9)
    return row["ends"][reached[0]] if len(reached) else None


def test_accuracy(row, args, work):
    """Train the selected hyperspace again, seeded, for its best epoch; score it on the held-out test images.
    Returns (test accuracy, validation accuracy reproduced)."""
    import keras

    from data import load_split
    from settings import Settings
    from trial import train

    settings = Settings(epochs=row["best_epoch"], data_dir=os.path.join(work, "subset"),
                        validation="test", seed=args.seed)
    keras.backend.clear_session()
    result, model = train(row["space"], settings)
    final = load_split("cifar100", os.path.join(work, "final"), "test")
    scores = model.evaluate(final.x_test, final.y_test, verbose=0, return_dict=True)
    return float(scores["fine_outputs_accuracy"]), result["fine_best_accuracy"]


# --- Replay (bench/replay.py) ---------------------------------------------------------------------------

def ours(prune, args, **changes):
    """make_rule of our rule `prune` at this run's settings."""
    return our_rule(prune, args.epochs, prune_eta=args.eta, prune_min_epochs=args.min_epochs, **changes)


def optuna_pruners(args):
    """Optuna's pruners at the same settings as ours: name -> a function making one."""
    import optuna

    p, warmup = optuna.pruners, prune_warmup(args.epochs)
    return {f"optuna MedianPruner({PRUNE_MIN_TRIALS}, {warmup})": lambda: p.MedianPruner(PRUNE_MIN_TRIALS, warmup),
            f"optuna SuccessiveHalvingPruner({args.min_epochs}, {args.eta})":
                lambda: p.SuccessiveHalvingPruner(args.min_epochs, args.eta),
            f"optuna HyperbandPruner({args.min_epochs}, {args.epochs}, {args.eta})":
                lambda: p.HyperbandPruner(args.min_epochs, args.epochs, args.eta)}


def replay_optuna_mean(name, make_pruner, curves):
    """Epochs per trial (a mean over HYPERBAND_NAMES study names for Hyperband, whose brackets hang on a
    hash of the study's name) and the best found (the same mean)."""
    names = [f"replay-{k}" for k in range(HYPERBAND_NAMES)] if "Hyperband" in name else ["replay"]
    runs = [replay_optuna(make_pruner, curves, study_name) for study_name in names]
    rows = [replay_row(curves, ran) for ran in runs]
    return dict(epochs=float(np.mean([r["epochs"] for r in rows])), best=float(np.mean([r["best"] for r in rows])))


def replay_row(curves, ran):
    done = [(c, n) for c, n in zip(curves, ran) if c is not None]
    return dict(epochs=sum(n for _, n in done), best=max(max(c[:n]) for c, n in done))


def check_replay(prune, real_trials, none_trials, args):
    """The replay of a rule that ran for real, against that run: lines to print."""
    real_ran = [t["result"]["epochs_run"] if t["result"]["status"] == "ok" else None for t in real_trials]
    # 1. On the run's own curves (a pruned trial's curve ends where it stopped; the rule read no further).
    own = replay_ours(curves_of(real_trials), ours(prune, args))
    same = sum(a == b for a, b in zip(own, real_ran))
    lines = [f"{prune}: replayed on its own run's curves, {same} of {len(real_ran)} trials run the same epochs "
             f"({'same' if same == len(real_ran) else 'DIFFERENT'}: {sum(filter(None, own))} replayed, "
             f"{sum(filter(None, real_ran))} real)"]
    # 2. On the none run's curves, over the trials both searches share: the same models, in the same order.
    shared = 0
    for a, b in zip(real_trials, none_trials):
        if a["misc"]["vals"] != b["misc"]["vals"]:
            break
        shared += 1
    on_none = replay_ours(curves_of(none_trials[:shared]), ours(prune, args))
    same = sum(a == b for a, b in zip(on_none, real_ran[:shared]))
    lines.append(f"{prune}: replayed on the none run's curves, the first {shared} trials (the models both searches "
                 f"trained): {same} of {shared} run the same epochs ({'same' if same == shared else 'DIFFERENT'}: "
                 f"{sum(filter(None, on_none))} replayed, {sum(filter(None, real_ran[:shared]))} real)")
    return lines


def print_replays(none_trials, real_trials, args):
    """The replay table on the none search's curves, and the check of each rule that ran for real."""
    from pruning import MedianStoppingRule

    curves = curves_of(none_trials)
    none_epochs = sum(len(c) for c in curves if c)
    none_best = max(max(c) for c in curves if c)
    former = lambda trials, tid: MedianStoppingRule(trials, args.epochs, count_pruned=True)  # noqa: E731
    replays = {"none": [len(c) if c else None for c in curves],
               "median (ours)": replay_ours(curves, ours("median", args)),
               "median, pruned trials counted (ours before)": replay_ours(curves, former),
               f"asha (ours, eta {args.eta}, first rung {args.min_epochs})": replay_ours(curves, ours("asha", args)),
               "curve (ours)": replay_ours(curves, ours("curve", args))}
    rows = {name: replay_row(curves, ran) for name, ran in replays.items()}
    rows.update({name: replay_optuna_mean(name, make, curves) for name, make in optuna_pruners(args).items()})
    print(f"\nReplay on the none search's curves ({sum(c is not None for c in curves)} trials in order; Optuna's "
          f"Hyperband: the mean over {HYPERBAND_NAMES} study names):")
    width = max(map(len, rows))
    print(f"{'rule':<{width}} {'epochs':>6} {'saved':>6} {'best val acc':>12} {'vs none':>8}")
    for name, r in rows.items():
        print(f"{name:<{width}} {r['epochs']:>6.0f} {1 - r['epochs'] / none_epochs:>6.1%} {r['best']:>12.4f} "
              f"{r['best'] - none_best:>+8.4f}")
    if real_trials:
        print("\nReplay check against the real runs:")
    for prune, trials in real_trials.items():
        for line in check_replay(prune, trials, none_trials, args):
            print(line)


def fmt_seconds(s):
    return "never" if s is None else f"{s:.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("HKS_DATA_DIR", "ml_req"),
                   help="folder of the real cifar-100-python.tar.gz (default %(default)s)")
    p.add_argument("--trials", type=int, default=30, help="trials per search (default %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial, unpruned (default %(default)s)")
    p.add_argument("--classes", type=int, default=10,
                   help="fine classes in the subset, evenly spaced (default %(default)s)")
    p.add_argument("--train-per-class", type=int, default=80, help="training images per class (default %(default)s)")
    p.add_argument("--val-per-class", type=int, default=50,
                   help="validation images per class (from the test split), on which models are selected "
                        "(default %(default)s)")
    p.add_argument("--test-per-class", type=int, default=50,
                   help="held-out test images per class (the next ones of the test split), on which the selected "
                        "models are scored (default %(default)s)")
    p.add_argument("--eta", type=int, default=3, help="asha's eta (default %(default)s)")
    p.add_argument("--min-epochs", type=int, default=1, help="asha's first rung (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every search (default %(default)s)")
    p.add_argument("--work-dir", help="keep the subset, logs and results here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="6 trials of 4 epochs on 10 x 20 images (for CI)")
    p.add_argument("--replay-from", metavar="WORK",
                   help="run no search: replay the rules on the curves of an earlier run's --work-dir (its "
                        "none/results.pkl), in seconds, and check them against its median and curve runs; give "
                        "that run's --epochs, --eta and --min-epochs")
    args = p.parse_args(argv)
    if args.replay_from:
        loaded = {}
        for prune in RULES:
            path = os.path.join(args.replay_from, prune, "results.pkl")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    loaded[prune] = pickle.load(f).trials
        if "none" not in loaded:
            sys.exit(f"error: no none/results.pkl in {args.replay_from}")
        print_replays(loaded.pop("none"), loaded, args)
        return 0
    if args.quick:
        args.trials, args.epochs, args.classes = 6, 4, 10
        args.train_per_class, args.val_per_class, args.test_per_class = 20, 2, 2
    classes = list(range(0, 100, 100 // args.classes))[:args.classes]
    os.environ["HKS_PRUNE_ETA"], os.environ["HKS_PRUNE_MIN_EPOCHS"] = str(args.eta), str(args.min_epochs)

    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.abspath(args.work_dir or tmp)
        os.environ["HKS_NO_DOWNLOAD"] = "1"
        try:
            n_train, n_val, n_test = write_subsets(args.data_dir, work, classes, args.train_per_class,
                                                   args.val_per_class, args.test_per_class)
        except DataError as e:
            sys.exit(f"error: {e}")
        print(f"Subset of {args.data_dir}: fine classes {classes}, {n_train} training images, {n_val} validation "
              f"images (models selected on them), {n_test} test images. {args.trials} trials of up to "
              f"{args.epochs} epochs, seed {args.seed}; asha: eta {args.eta}, first rung {args.min_epochs} "
              f"epoch(s).", flush=True)
        runs = {prune: search(prune, args, os.path.join(work, "subset"), work) for prune in RULES}
        rows = {prune: summary(*run) for prune, run in runs.items()}
        tested = {}  # hyperspaces trained once: the same selected model in two searches is scored once
        for row in rows.values():
            key = repr(sorted(row["space"].items())) + str(row["best_epoch"])
            if key not in tested:
                tested[key] = test_accuracy(row, args, work)
            row["test"], row["val_again"] = tested[key]

    none = rows["none"]
    target = none["best"] - GOOD
    print(f"\n{'prune':<7} {'trials':>6} {'pruned':>6} {'failed':>6} {'epochs':>6} {'saved':>6} {'wall s':>7} "
          f"{'best val acc':>12} {'test acc':>8} {'its trial':>9} {'s to good':>9}")
    for prune, r in rows.items():
        print(f"{prune:<7} {r['trials']:>6} {r['pruned']:>6} {r['failed']:>6} {r['epochs']:>6} "
              f"{1 - r['epochs'] / none['epochs']:>6.1%} {r['seconds']:>7.0f} {r['best']:>12.4f} {r['test']:>8.4f} "
              f"{r['tid']:>9} {fmt_seconds(time_to(r, target)):>9}")
    print(f"s to good: wall seconds until the best so far was within {GOOD} of none's best ({target:.4f} or more). "
          f"test acc: the selected model on the {n_test} held-out test images, trained again for its best epoch "
          f"(validation accuracy reproduced: " + ", ".join(
              f"{p} {r['val_again']:.4f} vs {r['best']:.4f}" for p, r in rows.items()) + ").")
    for prune in RULES[1:]:
        r = rows[prune]
        diff = r["best"] - none["best"]
        print(f"{prune}: {1 - r['epochs'] / none['epochs']:.1%} fewer epochs, {1 - r['seconds'] / none['seconds']:.1%} "
              f"less wall time, best validation accuracy {diff:+.4f} "
              f"({'equal' if diff == 0 else 'better' if diff > 0 else 'worse'}).")

    print_replays(runs["none"][0], {prune: runs[prune][0] for prune in RULES[1:]}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
