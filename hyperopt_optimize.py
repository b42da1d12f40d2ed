"""Search the hyperparameters and architecture of a CNN on CIFAR-100 with hyperopt's TPE.

    python3 hyperopt_optimize.py                        # search until Ctrl-C; run again to resume
    python3 hyperopt_optimize.py --epochs 1 --max-evals 2 --train-subset 2000   # a quick look
    python3 hyperopt_optimize.py --mongo mongo://HOST:PORT/DB/jobs --exp-key NAME  # workers train the trials

Each trial trains one CNN (neural_net.py) and writes results/model_<val accuracy>_<id>.txt.json;
the trials are pickled to results.pkl after each one, so the search resumes where it stopped.
With --mongo the trials are queued in MongoDB and trained by workers (hyperopt_worker.py, on any
number of machines); running the driver again with the same --exp-key resumes the experiment.
results/model_best.png is redrawn whenever the best changes; report.py shows the whole search.
"""
import argparse
import contextlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before Keras loads TensorFlow: no start-up INFO lines

import numpy as np  # noqa: E402
from hyperopt import STATUS_OK, fmin, hp, tpe  # noqa: E402
from hyperopt.base import JOB_STATE_DONE  # noqa: E402
from hyperopt.exceptions import AllTrialsFailed  # noqa: E402

import mongo_search  # noqa: E402
from data import ARCHIVES, DataError, load_split  # noqa: E402
from device import PRECISIONS  # noqa: E402
from neural_net import DEFAULT_SETTINGS, draw_model, make_objective  # noqa: E402
from utils import load_trials, save_trials  # noqa: E402

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


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


positive_float.__name__ = "positive number"


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
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=DEFAULT_SETTINGS["tensorboard"],
                   help="log each model's epochs to TensorBoard/<model name>/ (make tensorboard shows them; "
                        "default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_SETTINGS["precision"],
                   help="float32, or mixed precision (float32 weights, float16 or bfloat16 math); auto: mixed "
                        "on GPUs and TPUs that compute it natively, float32 on CPUs (default %(default)s)")


def settings_from(args):
    """The trial settings (neural_net.DEFAULT_SETTINGS) that parsed options ask for."""
    return {**DEFAULT_SETTINGS, "epochs": args.epochs, "dataset": args.dataset, "data_dir": args.data_dir,
            "train_subset": args.train_subset, "validation": args.validation,
            "results_dir": args.results_dir, "seed": args.seed, "tensorboard": args.tensorboard,
            "precision": args.precision,
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
    p.add_argument("--mongo", metavar="URL", default=mongo_search.url_from_env(),
                   help=f"queue the trials in MongoDB at {mongo_search.URL_FORM}, for workers "
                        "(hyperopt_worker.py) to train, instead of training them here (env MONGO_DB_HOST, "
                        "MONGO_DB_PORT, MONGO_DB_NAME, MONGO_DB_USER, MONGO_DB_PASSWORD)")
    p.add_argument("--exp-key", default=os.environ.get("EXPERIMENT_NAME") or "hks",
                   help="name of the experiment in MongoDB; the same name resumes it (env EXPERIMENT_NAME; "
                        "default %(default)s)")
    p.add_argument("--stale-after", type=positive_float,
                   default=os.environ.get("HKS_STALE_AFTER") or mongo_search.STALE_AFTER_S,
                   help="with --mongo: requeue a running trial that sent no heartbeat (one per epoch) for this "
                        "many seconds: its worker died (env HKS_STALE_AFTER; default %(default)s)")
    return p.parse_args(argv)


def best_result(trials):
    ok = [t["result"] for t in trials.trials if t["result"].get("status") == STATUS_OK]
    return min(ok, key=lambda r: r["loss"]) if ok else None


def describe(result):
    if result["status"] != STATUS_OK:
        return f"failed: {result.get('error')}"
    pruned = f" (pruned at epoch {result['pruned_at_epoch']})" if result.get("pruned") else ""
    return (f"{result['model_name']}: val fine accuracy {result['fine_best_accuracy']:.4f}, "
            f"test fine accuracy {result['fine_test_accuracy']:.4f}{pruned}")


def print_best(trials, results_dir):
    best = best_result(trials)
    if best is None:
        print("No trial has finished successfully yet.")
    else:
        print(f"\nBest of {len(trials.trials)} trials: {describe(best)}\n"
              f"Its result file: {os.path.join(results_dir, best['model_name'] + '.txt.json')}")


def draw_best_model(best, settings):
    """Redraw model_best.png; a failure (no graphviz, say) is one warning, never a failed search."""
    path = os.path.join(settings["results_dir"], "model_best.png")
    try:
        draw_model(best["space"], path, settings["dataset"])
        print(f"New best model: drew {path}")
    except Exception as e:  # noqa: BLE001 -- a picture must not stop the search
        print(f"warning: {path} not drawn ({type(e).__name__}: {e})".replace("\n", " "), file=sys.stderr)


def show_best(trials, settings, drawn):
    """Print the best so far and redraw model_best.png when it changed; return the model_name now drawn."""
    best = best_result(trials)
    if best is None:
        return drawn
    print(f"Best so far: {describe(best)}", flush=True)
    if best["model_name"] != drawn:
        draw_best_model(best, settings)
    return best["model_name"]


def minutes(seconds):
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_search(args):
    if args.mongo:
        return run_mongo_search(args)
    settings = settings_from(args)
    split = load_data_or_exit(settings)
    trials = load_trials(args.trials_file, "it was left untouched: move it away to start a new search, "
                                           "or pass --trials-file")
    found = len(trials.trials)
    todo = "until Ctrl-C" if args.max_evals is None else max(0, args.max_evals - found)
    print(f"{args.dataset}: training on {len(split.x_train)} images, selecting on {len(split.x_val)} "
          f"({args.validation}), {args.epochs} epochs per trial.")
    print(f"Found {found} saved trials in {args.trials_file}; {todo} more will run.", flush=True)

    objective = make_objective(settings)
    saved = found
    drawn = None  # the model_name of the best model drawn to model_best.png
    search_start = time.time()
    try:
        while args.max_evals is None or len(trials.trials) < args.max_evals:
            n = len(trials.trials) + 1
            print(f"\n=== Trial {n}" + (f" of {args.max_evals}" if args.max_evals else "") + " ===", flush=True)
            start = time.time()
            with contextlib.suppress(AllTrialsFailed):  # fmin's return value raises while every trial failed
                fmin(objective, space, algo=tpe.suggest, trials=trials, max_evals=n, show_progressbar=False,
                     rstate=np.random.default_rng([args.seed, n]))  # a new stream per trial, also when resumed
            save_trials(trials, args.trials_file)
            saved = len(trials.trials)
            print(f"Trial {n} took {time.time() - start:.0f} s, {describe(trials.trials[-1]['result'])}")
            if args.max_evals and n < args.max_evals:
                left = (time.time() - search_start) / (n - found) * (args.max_evals - n)
                print(f"About {minutes(left)} left for {args.max_evals - n} more trials")
            drawn = show_best(trials, settings, drawn)
    except KeyboardInterrupt:
        print(f"\nInterrupted. The {saved} finished trials are saved in "
              f"{args.trials_file}: run the same command again to resume.")
        return 130
    print_best(trials, args.results_dir)
    return 0


def run_mongo_search(args):
    """The same search on hyperopt's MongoTrials: TPE queues trials in MongoDB, workers train them."""
    settings = settings_from(args)
    trials = mongo_search.connect_or_exit(args.mongo, args.exp_key)
    mongo_search.store_settings_or_exit(trials, settings, args.exp_key)  # workers read them there too
    found = len(trials.trials)
    todo = "until Ctrl-C" if args.max_evals is None else max(0, args.max_evals - found)
    url = mongo_search.shown(args.mongo)
    print(f"Experiment {args.exp_key!r} at {url}: {args.dataset}, {args.epochs} epochs per trial, trained by "
          f"workers:\n    python3 hyperopt_worker.py --mongo {url} --exp-key {args.exp_key}")
    print(f"Found {found} trials of the experiment; {todo} more will be queued.", flush=True)

    requeue_lost = mongo_search.RequeueLostTrials(args.exp_key, args.stale_after)
    reported = {t["tid"] for t in trials.trials if t["state"] == JOB_STATE_DONE}
    drawn = [None]  # the model_name of the best model drawn to model_best.png

    def after_each_poll(trials, *_):
        """hyperopt calls its early_stop_fn after each look at MongoDB (every second): report, requeue."""
        requeue_lost(trials)
        for t in trials.trials:
            if t["state"] == JOB_STATE_DONE and t["tid"] not in reported:
                reported.add(t["tid"])
                print(f"Trial {t['tid']} done ({len(reported)} in all): {describe(t['result'])}")
                drawn[0] = show_best(trials, settings, drawn[0])
        return False, []  # never stops the search

    try:
        while True:
            with contextlib.suppress(AllTrialsFailed):  # fmin looks up the best trial as it returns
                fmin(make_objective(settings), space, algo=tpe.suggest, trials=trials,
                     max_evals=args.max_evals or sys.maxsize, show_progressbar=False, return_argmin=False,
                     rstate=np.random.default_rng([args.seed, found]),  # each resume draws new points
                     early_stop_fn=after_each_poll)
            if not requeue_lost(trials):  # a trial whose worker stopped as fmin returned: wait for it too
                break
    except KeyboardInterrupt:
        print("\nInterrupted. The experiment is in MongoDB and queued trials still run on the workers: run the "
              "same command again to resume.")
        return 130
    trials.refresh()
    print_best(trials, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    sys.exit(run_search(parse_args()))
