"""Search the hyperparameters and architecture of a CNN on CIFAR-100 with hyperopt's TPE.

    python3 hyperopt_optimize.py                        # search until Ctrl-C; run again to resume
    python3 hyperopt_optimize.py --epochs 1 --max-evals 2 --train-subset 2000   # a quick look

Each trial trains one CNN (neural_net.py) and writes results/model_<val accuracy>_<id>.txt.json;
the trials are pickled to results.pkl after each one, so the search resumes where it stopped.
"""
import argparse
import os
import pickle
import sys
import time

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

from data import ARCHIVES, DataError, load_split
from device import PRECISIONS
from neural_net import DEFAULT_SETTINGS, make_objective
from utils import atomic_write

# The classic search space: same labels and ranges, so old results.pkl and result files still read.
space = {
    "lr_rate_mult": hp.loguniform("lr_rate_mult", -0.5, 0.5),  # learning rate 0.001 * this
    "l2_weight_reg_mult": hp.loguniform("l2_weight_reg_mult", -1.3, 1.3),  # L2 0.0007 * this
    "batch_size": hp.quniform("batch_size", 100, 700, 5),
    "optimizer": hp.choice("optimizer", ["Adam", "Nadam", "RMSprop"]),
    "coarse_labels_weight": hp.uniform("coarse_labels_weight", 0.1, 0.7),  # loss weight of the 20-class head
    "conv_dropout_drop_proba": hp.uniform("conv_dropout_proba", 0.0, 0.35),
    "fc_dropout_drop_proba": hp.uniform("fc_dropout_proba", 0.0, 0.6),
    "use_BN": hp.choice("use_BN", [False, True]),
    "first_conv": hp.choice("first_conv", [None, hp.choice("first_conv_size", [3, 4])]),
    "residual": hp.choice("residual", [None, hp.quniform("residual_units", 1 - 0.499, 4 + 0.499, 1)]),
    "conv_hiddn_units_mult": hp.loguniform("conv_hiddn_units_mult", -0.6, 0.6),  # 40 * this first filters
    "nb_conv_pool_layers": hp.choice("nb_conv_pool_layers", [2, 3]),
    "conv_pool_res_start_idx": hp.quniform("conv_pool_res_start_idx", 0, 2, 1),
    "pooling_type": hp.choice("pooling_type", ["max", "avg", "all_conv", "inception"]),
    "conv_kernel_size": hp.quniform("conv_kernel_size", 2, 4, 1),
    "res_conv_kernel_size": hp.quniform("res_conv_kernel_size", 2, 4, 1),
    "fc_units_1_mult": hp.loguniform("fc_units_1_mult", -0.6, 0.6),  # 1000 * this units
    "one_more_fc": hp.choice("one_more_fc", [None, hp.loguniform("fc_units_2_mult", -0.6, 0.6)]),  # 750 * this
    "activation": hp.choice("activation", ["relu", "elu"]),
}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"  # argparse names the type in its error message


def add_training_options(p):
    """The options of one training run, shared by the search and by train.py."""
    env = os.environ.get
    p.add_argument("--epochs", type=positive_int, default=env("HKS_EPOCHS", DEFAULT_SETTINGS["epochs"]),
                   help="epochs per trial (env HKS_EPOCHS; default %(default)s)")
    p.add_argument("--dataset", choices=sorted(ARCHIVES), default=DEFAULT_SETTINGS["dataset"],
                   help="cifar100 (fine + coarse heads) or cifar10 (fine head only; default %(default)s)")
    p.add_argument("--data-dir", default=env("HKS_DATA_DIR", DEFAULT_SETTINGS["data_dir"]),
                   help="folder holding the dataset archive (env HKS_DATA_DIR; default %(default)s)")
    p.add_argument("--train-subset", type=positive_int, default=env("HKS_TRAIN_SUBSET"),
                   help="train on this many training images only, for quick runs (env HKS_TRAIN_SUBSET)")
    p.add_argument("--validation", choices=["split", "test"], default=DEFAULT_SETTINGS["validation"],
                   help="select models on 5,000 held-out training images (split, default) or on the "
                        "test set as the classic repo did (test)")
    p.add_argument("--results-dir", default=DEFAULT_SETTINGS["results_dir"],
                   help="folder for the per-model JSON files (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SETTINGS["seed"],
                   help="seed of TPE and of weight initialization (default %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_SETTINGS["precision"],
                   help="float32, or mixed precision (float32 weights, float16 or bfloat16 math); auto: mixed "
                        "on GPUs and TPUs that compute it natively, float32 on CPUs (default %(default)s)")


def settings_from(args):
    """The trial settings (neural_net.DEFAULT_SETTINGS) that parsed options ask for."""
    return {**DEFAULT_SETTINGS, "epochs": args.epochs, "dataset": args.dataset, "data_dir": args.data_dir,
            "train_subset": args.train_subset, "validation": args.validation,
            "results_dir": args.results_dir, "seed": args.seed, "precision": args.precision,
            "prune": getattr(args, "prune", "none")}  # only the search prunes: train.py has no --prune


def load_data_or_exit(settings):
    """Load the data once, before any training, so a bad archive is one clear error."""
    try:
        return load_split(settings["dataset"], settings["data_dir"], settings["validation"], settings["train_subset"])
    except DataError as e:
        sys.exit(f"error: {e}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_training_options(p)
    p.add_argument("--max-evals", type=positive_int, default=os.environ.get("HKS_MAX_EVALS"),
                   help="total trials of the experiment, resumed ones included (env HKS_MAX_EVALS; "
                        "default: run until Ctrl-C)")
    p.add_argument("--prune", choices=["median", "none"], default=DEFAULT_SETTINGS["prune"],
                   help="median: stop a trial after its warm-up once its best validation accuracy is below the "
                        "median of the finished trials' at the same epoch (default); none: train every trial "
                        "for --epochs")
    p.add_argument("--trials-file", default="results.pkl",
                   help="pickled hyperopt trials, saved after each trial and resumed from (default %(default)s)")
    return p.parse_args(argv)


def load_trials(path):
    """The saved trials, or new ones if there are none. A broken file is left as it is."""
    if not os.path.exists(path):
        return Trials()
    try:
        with open(path, "rb") as f:
            trials = pickle.load(f)
        if not isinstance(trials, Trials):
            raise TypeError(f"it holds a {type(trials).__name__}, not hyperopt Trials")
    except Exception as e:  # noqa: BLE001 -- any unreadable pickle gets the same advice
        sys.exit(f"error: {path} is not a readable trials file ({type(e).__name__}: {e}); it was left "
                 f"untouched: move it away to start a new search, or pass --trials-file")
    trials.refresh()
    return trials


def save_trials(trials, path):
    atomic_write(path, lambda f: pickle.dump(trials, f), mode="wb")


def best_result(trials):
    ok = [t["result"] for t in trials.trials if t["result"].get("status") == STATUS_OK]
    return min(ok, key=lambda r: r["loss"]) if ok else None


def describe(result):
    if result["status"] != STATUS_OK:
        return f"failed: {result.get('error')}"
    pruned = f" (pruned at epoch {result['pruned_at_epoch']})" if result.get("pruned") else ""
    return (f"{result['model_name']}: val fine accuracy {result['fine_best_accuracy']:.4f}, "
            f"test fine accuracy {result['fine_test_accuracy']:.4f}{pruned}")


def run_search(args):
    settings = settings_from(args)
    split = load_data_or_exit(settings)
    trials = load_trials(args.trials_file)
    found = len(trials.trials)
    todo = "until Ctrl-C" if args.max_evals is None else max(0, args.max_evals - found)
    print(f"{args.dataset}: training on {len(split.x_train)} images, selecting on {len(split.x_val)} "
          f"({args.validation}), {args.epochs} epochs per trial.")
    print(f"Found {found} saved trials in {args.trials_file}; {todo} more will run.", flush=True)

    objective = make_objective(settings)
    saved = found
    try:
        while args.max_evals is None or len(trials.trials) < args.max_evals:
            n = len(trials.trials) + 1
            print(f"\n=== Trial {n}" + (f" of {args.max_evals}" if args.max_evals else "") + " ===", flush=True)
            start = time.time()
            fmin(objective, space, algo=tpe.suggest, trials=trials, max_evals=n, show_progressbar=False,
                 rstate=np.random.default_rng([args.seed, n]))  # a new stream per trial, also when resumed
            save_trials(trials, args.trials_file)
            saved = len(trials.trials)
            best = best_result(trials)
            print(f"Trial {n} took {time.time() - start:.0f} s, {describe(trials.trials[-1]['result'])}")
            if best:
                print(f"Best so far: {describe(best)}", flush=True)
    except KeyboardInterrupt:
        print(f"\nInterrupted. The {saved} finished trials are saved in "
              f"{args.trials_file}: run the same command again to resume.")
        return 130
    best = best_result(trials)
    if best is None:
        print("No trial has finished successfully yet.")
    else:
        print(f"\nBest of {len(trials.trials)} trials: {describe(best)}\n"
              f"Its result file: {os.path.join(args.results_dir, best['model_name'] + '.txt.json')}")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    sys.exit(run_search(parse_args()))
