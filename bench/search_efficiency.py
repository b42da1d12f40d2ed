"""The same seeded search twice, without and with pruning: epochs trained, wall time, best accuracy.

    python3 bench/search_efficiency.py --data-dir ml_req      # the README's run: see there for its size
    python3 bench/search_efficiency.py --quick --data-dir DIR # tiny, checks that it runs (CI)

It cuts a subset of real CIFAR-100 (every tenth fine class by default, the first images of each)
into a temporary archive in the official format, then runs the real driver, hyperopt_optimize.py,
once with --prune none and once with --prune median, same seed, one after the other. Models are
selected on the subset's test images (--validation test): the held-out split would keep a tenth
of the 800 training images, too few to rank models. With TPE's
first 20 trials drawn at random, both searches train the same first 20 models; pruning decides
only how long each trains. Wall time includes each trial's model building and compilation.
"""
import argparse
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


def write_subset(data_dir, folder, classes, train_per_class, test_per_class):
    """cifar-100-python.tar.gz in `folder`: the first images of the given fine classes, real pixels and labels."""
    ds = load_dataset("cifar100", data_dir)

    def member(x, fine, coarse, per_class):
        keep = np.sort(np.concatenate([np.flatnonzero(fine == c)[:per_class] for c in classes]))
        rows = x[keep].transpose(0, 3, 1, 2).reshape(len(keep), 3072)  # back to the archive's channels-first rows
        return {"data": rows, "fine_labels": fine[keep].tolist(), "coarse_labels": coarse[keep].tolist()}

    meta = {"fine_label_names": ds.fine_names, "coarse_label_names": ds.coarse_names}
    train = member(ds.x_train, ds.y_train_fine, ds.y_train_coarse, train_per_class)
    test = member(ds.x_test, ds.y_test_fine, ds.y_test_coarse, test_per_class)
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(os.path.join(folder, "cifar-100-python.tar.gz"), "w:gz") as tar:
        for name, obj in (("train", train), ("test", test), ("meta", meta)):
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return len(train["fine_labels"]), len(test["fine_labels"])


def search(prune, args, subset_dir, work):
    """One search by the real driver; returns its trials and wall time. Its output goes to work/<prune>.log."""
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
        return pickle.load(f).trials, seconds


def summary(trials, seconds):
    ok = [t["result"] for t in trials if t["result"]["status"] == "ok"]
    best = max(ok, key=lambda r: r["fine_best_accuracy"])
    return dict(trials=len(trials), pruned=sum(bool(r.get("pruned")) for r in ok), failed=len(trials) - len(ok),
                epochs=sum(r["epochs_run"] for r in ok), seconds=seconds, best=best["fine_best_accuracy"],
                tid=best["trial_id"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("HKS_DATA_DIR", "ml_req"),
                   help="folder of the real cifar-100-python.tar.gz (default %(default)s)")
    p.add_argument("--trials", type=int, default=20, help="trials per search (default %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial, unpruned (default %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="fine classes in the subset, evenly spaced (default %(default)s)")
    p.add_argument("--train-per-class", type=int, default=80, help="training images per class (default %(default)s)")
    p.add_argument("--test-per-class", type=int, default=50,
                   help="test images per class, on which models are selected (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of both searches (default %(default)s)")
    p.add_argument("--work-dir", help="keep the subset, logs and results here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="6 trials of 3 epochs on 10 x 20 images (for CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.classes, args.train_per_class, args.test_per_class = 6, 3, 10, 20, 2
    classes = list(range(0, 100, 100 // args.classes))[:args.classes]

    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.abspath(args.work_dir or tmp)
        subset = os.path.join(work, "subset")
        os.environ["HKS_NO_DOWNLOAD"] = "1"
        try:
            n_train, n_test = write_subset(args.data_dir, subset, classes, args.train_per_class, args.test_per_class)
        except DataError as e:
            sys.exit(f"error: {e}")
        print(f"Subset of {args.data_dir}: fine classes {classes}, {n_train} training images, {n_test} test "
              f"images (models selected on them). {args.trials} trials of up to {args.epochs} epochs, seed "
              f"{args.seed}.", flush=True)
        rows = {prune: summary(*search(prune, args, subset, work)) for prune in ("none", "median")}

    print(f"\n{'prune':<7} {'trials':>6} {'pruned':>6} {'failed':>6} {'epochs':>6} {'wall s':>7} "
          f"{'best val acc':>12} {'its trial':>9}")
    for prune, r in rows.items():
        print(f"{prune:<7} {r['trials']:>6} {r['pruned']:>6} {r['failed']:>6} {r['epochs']:>6} {r['seconds']:>7.0f} "
              f"{r['best']:>12.4f} {r['tid']:>9}")
    none, median = rows["none"], rows["median"]
    diff = median["best"] - none["best"]
    print(f"Median pruning: {1 - median['epochs'] / none['epochs']:.1%} fewer epochs, "
          f"{1 - median['seconds'] / none['seconds']:.1%} less wall time, best validation accuracy "
          f"{diff:+.4f} ({'equal' if diff == 0 else 'better' if diff > 0 else 'worse'}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
