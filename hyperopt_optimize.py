"""Search the hyperparameters and architecture of a CNN on CIFAR-100 with hyperopt's TPE.

    python3 hyperopt_optimize.py                        # search until Ctrl-C; run again to resume
    python3 hyperopt_optimize.py --epochs 1 --max-evals 2 --train-subset 2000   # a quick look
    python3 hyperopt_optimize.py --mongo mongo://HOST:PORT/DB/jobs --exp-key NAME  # workers train

Each trial trains one CNN (trial.py), in a process of its own (trial_process.py), and writes
results/model_<val accuracy>_<id>.txt.json;
the trials are pickled to results.pkl after each one, so the search resumes where it stopped.
With --mongo the trials are queued in MongoDB and trained by workers (hyperopt_worker.py, on any
number of machines); running the driver again with the same --exp-key resumes the experiment.
results/model_best.png is redrawn whenever the best changes; report.py shows the whole search.
"""
import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import time

# Ctrl-C while the libraries load: nothing started yet, stop without a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
# before Keras loads TensorFlow: no start-up INFO lines
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import filelock  # noqa: E402
import numpy as np  # noqa: E402
from hyperopt import fmin, tpe  # noqa: E402
from hyperopt.base import JOB_STATE_DONE  # noqa: E402
from hyperopt.exceptions import AllTrialsFailed  # noqa: E402

from hyperopt.pyll import rec_eval  # noqa: E402

import mongo_search  # noqa: E402
import tensorboard_runs  # noqa: E402
import trial_process  # noqa: E402
from data import DataError  # noqa: E402
from lost_workers import HEARTBEAT_EVERY_S, MIN_STALE_AFTER_S, STALE_AFTER_S, RequeueLostTrials  # noqa: E402
from objective import make_objective  # noqa: E402
from record import best_result, describe, result_path, save_result  # noqa: E402
from search_space import SPACE, space  # noqa: E402
from settings import (TENSORBOARD_DIR, Settings, add_pruning_options, add_training_options,  # noqa: E402
                      positive_float, positive_int)
from utils import (UserError, check_writable, ctrl_c_stops, duration, load_trials,  # noqa: E402
                   raise_if_interrupted, remove_stale_temporaries, save_trials, trials_lock, warn)

# The settings that give a local search's results their meaning, stored with its trials (in
# Trials.attachments): a resume with other values would rank the trials of two searches together.
# The others (folders, --seed, --precision, --tensorboard, verbosity, --max-evals) may change on
# resume.
SETTINGS = "hks_settings"
TRIAL_MEANING = ("dataset", "validation", "epochs", "train_subset", "prune", "prune_eta",
                 "prune_min_epochs")
# Each local trial trains in a process of its own (trial_process.py): TensorFlow keeps ~100 MB of
# every model trained in a process. False trains them in the driver's process (tests that patch the
# training use it).
TRIAL_PROCESS = True
# a run whose first trials all fail with one kind of error stops: its setup is wrong
SAME_FAILURES_STOP = 3

def stale_after(text):
    """--stale-after: seconds, at least MIN_STALE_AFTER_S (below, healthy trials would be
    requeued)."""
    value = positive_float(text)
    if value < MIN_STALE_AFTER_S:
        raise argparse.ArgumentTypeError(
            f"{text} s would requeue healthy trials: a running trial beats every "
            f"{HEARTBEAT_EVERY_S} s, give it at least {MIN_STALE_AFTER_S} s (default "
            f"{STALE_AFTER_S})")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_training_options(p)
    p.add_argument("--max-evals", type=positive_int, default=os.environ.get("HKS_MAX_EVALS"),
                   help="total trials of the experiment, resumed ones included (env HKS_MAX_EVALS; "
                        "default: run until Ctrl-C)")
    add_pruning_options(p)
    p.add_argument("--trials-file", default="results.pkl",
                   help="pickled hyperopt trials, saved after each trial and resumed from (default "
                        "%(default)s)")
    p.add_argument("--mongo", metavar="URL", default=mongo_search.url_from_env(),
                   help=f"queue the trials in MongoDB at {mongo_search.URL_FORM}, for workers "
                        "(hyperopt_worker.py) to train, instead of training them here (env "
                        "MONGO_DB_HOST, MONGO_DB_PORT, MONGO_DB_NAME, MONGO_DB_USER, "
                        "MONGO_DB_PASSWORD)")
    p.add_argument("--exp-key", default=os.environ.get("EXPERIMENT_NAME") or "hks",
                   help="name of the experiment in MongoDB; the same name resumes it (env "
                        "EXPERIMENT_NAME; default %(default)s)")
    p.add_argument("--stale-after", type=stale_after,
                   default=os.environ.get("HKS_STALE_AFTER") or STALE_AFTER_S,
                   help="with --mongo: requeue a running trial that sent no heartbeat (one every "
                        f"{HEARTBEAT_EVERY_S} s) for this many seconds, at least "
                        f"{MIN_STALE_AFTER_S}: its worker died (env HKS_STALE_AFTER; default "
                        "%(default)s)")
    return p.parse_args(argv)


def print_best(trials, results_dir):
    best = best_result(trials)
    if best is None:
        print("No trial has finished successfully yet.")
    else:
        file = (f"\nIts result file: {result_path(results_dir, best['model_name'])}"
                if isinstance(best.get("model_name"), str) else "")
        print(f"\nBest of {len(trials.trials)} trials: {describe(best)}{file}")


def show_best(trials, settings, drawn):
    """Print the best so far and redraw model_best.png when it changed; return the model_name now
    drawn."""
    best = best_result(trials)
    if best is None:
        return drawn
    print(f"Best so far: {describe(best)}", flush=True)
    # other tools' results may lack them
    if best.get("model_name") != drawn and isinstance(best.get("space"), dict):
        path = os.path.join(settings.results_dir, "model_best.png")
        if draw_model_best(best["space"], path, settings.dataset):
            print(f"New best model: drew {path}")
    return best.get("model_name")


def draw_model_best(hype_space, path, dataset):
    """try_draw_model, in a process of its own where the trials run in one: Keras builds the model
    to draw."""
    from trial import try_draw_model  # Keras loads here, in the driver, only without TRIAL_PROCESS

    if not TRIAL_PROCESS:
        return try_draw_model(hype_space, path, dataset)
    try:
        return trial_process.call_in_process(try_draw_model, hype_space, path, dataset)
    except trial_process.ProcessDied as e:
        warn(f"{path} not drawn ({e})")
        return False


def run_search(args):
    """The search the options ask for: its exit status; what the user must fix is one line,
    exit 1."""
    settings = Settings.from_args(args)
    try:
        if args.mongo:
            return run_mongo_search(args, settings)
        return run_local_search(args, settings)
    except (UserError, DataError) as e:
        sys.exit(f"error: {e}")


def run_local_search(args, settings):
    """The local search: its folders checked and its trials file locked first."""
    # Before any training: the folders it writes to, then the trials file, which one driver at a
    # time uses.
    check_writable(settings.results_dir, "the search writes its result files there: free space or "
                                         "fix the folder, or pass --results-dir another folder")
    check_writable(os.path.dirname(args.trials_file), f"the search saves {args.trials_file} there: "
                   "free space or fix the folder, or pass --trials-file")
    if settings.tensorboard:
        check_writable(TENSORBOARD_DIR, "--tensorboard logs each trial there: move what is in the "
                                        "way, or pass --no-tensorboard")
    lock = trials_lock(args.trials_file)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        sys.exit(f"error: another search is running on {args.trials_file} (it holds "
                 f"{lock.lock_file}): wait for it to end or stop it; to run a second search beside "
                 "it, pass it another --trials-file")
    # filelock opens no symbolic link (it could truncate the file linked to), nor a folder
    except OSError as e:
        kind = ("a symbolic link" if os.path.islink(lock.lock_file)
                else f"not a lock file ({e.strerror or e})")
        sys.exit(f"error: {lock.lock_file} is {kind}: the search locks {args.trials_file} with "
                 "that file; remove it, or pass another --trials-file")
    try:
        clean_temporaries(settings.results_dir, os.path.dirname(args.trials_file) or ".")
        with ctrl_c_stops():
            return run_trials(args, settings)
    finally:
        lock.release()


def space_fingerprint():
    """A short hash of search_space.SPACE (labels, kinds, ranges): a search resumes in the space it
    began in."""
    return hashlib.sha256(repr(sorted(SPACE.items())).encode()).hexdigest()[:16]


def search_settings(settings):
    """What a local search stores with its trials: the settings of TRIAL_MEANING and the space's
    fingerprint."""
    return {**{k: getattr(settings, k) for k in TRIAL_MEANING}, "space": space_fingerprint()}


def stored_settings(trials):
    """The search settings stored with the trials, or those its results recorded (trials saved
    without them; the classic repo's record none: {})."""
    attachments = getattr(trials, "attachments", None) or {}
    if SETTINGS in attachments:
        return json.loads(attachments[SETTINGS])
    recorded = next((t["result"] for t in reversed(trials.trials)
                     if "epochs_budget" in t["result"]), None)
    if recorded is None:
        return {}
    return {"dataset": recorded.get("dataset"), "validation": recorded.get("validation"),
            "train_subset": recorded.get("train_subset"), "epochs": recorded.get("epochs_budget")}


def check_same_search_or_exit(trials, settings, trials_file):
    """A resume keeps the settings that give the saved trials their meaning: one line naming what
    differs."""
    stored, now = stored_settings(trials), search_settings(settings)
    changed = [k for k in now if k in stored and stored[k] != now[k]]
    if not changed:
        return
    shown = lambda v: "unset" if v is None else v  # noqa: E731
    what = ["another search space (search_space.SPACE changed)" if k == "space" else
            f"--{k.replace('_', '-')} {shown(stored[k])} (not {shown(now[k])})" for k in changed]
    sys.exit(f"error: {trials_file} holds a search run with {', '.join(what)}: resume it with the "
             "same options, or start a new search with another --trials-file and --results-dir")


def clean_temporaries(*folders):
    """Remove the temporary files that writes killed midway left behind (utils.atomic_file), saying
    so."""
    for folder in folders:
        removed = remove_stale_temporaries(folder)
        if removed:
            print(f"Removed {len(removed)} temporary files left in {folder} by writes killed "
                  f"midway: {', '.join(removed[:5])}{' ...' if len(removed) > 5 else ''}")


def write_missing_result(trials, trials_file, results_dir):
    """The last saved trial's result file, written from results.pkl when a stop came between saving
    it and writing the file (a kill, a full disk): every saved trial has its file, and every file is
    of a saved trial."""
    result = trials.trials[-1]["result"] if trials.trials else {}
    name = result.get("model_name")
    if "trial_id" not in result or not name or os.path.exists(result_path(results_dir, name)):
        return  # nothing missing, or a result of the classic repo, which wrote its files itself
    path = save_result(result, results_dir)
    print(f"Trial {len(trials.trials)} was saved in {trials_file} but its result file was not "
          f"written (the search stopped in between): wrote {path} from {trials_file}.")


def local_objective(settings):
    """fmin's objective for the local search: the trial trains in a process of its own
    (trial_process.py)."""
    def objective(expr, memo, ctrl):
        hype_space = rec_eval(expr, memo=memo)
        result = trial_process.train_in_process(hype_space, settings, ctrl.trials,
                                                ctrl.current_trial)
        return result
    objective.fmin_pass_expr_memo_ctrl = True
    return objective


def run_trials(args, settings):
    """The search, trial after trial; Ctrl-C (utils.ctrl_c_stops) stops it between safe points."""
    try:
        return _run_trials(args, settings)
    except KeyboardInterrupt:  # before the first trial: nothing new to save
        print(f"\nInterrupted before any trial ran; {args.trials_file} is as it was.")
        return 130


def _run_trials(args, settings):
    trials = load_trials(args.trials_file, "it was left untouched: move it away to start a new "
                                           "search, or pass --trials-file")
    check_same_search_or_exit(trials, settings, args.trials_file)
    split = settings.load_split()
    # saved with the next trial
    trials.attachments[SETTINGS] = json.dumps(search_settings(settings))
    raise_if_interrupted()
    found = len(trials.trials)
    todo = "until Ctrl-C" if args.max_evals is None else max(0, args.max_evals - found)
    print(f"{settings.dataset}: training on {len(split.x_train)} images, selecting on "
          f"{len(split.x_val)} ({settings.validation}), {settings.epochs} epochs per trial.")
    print(f"Found {found} saved trials in {args.trials_file}; {todo} more will run.", flush=True)

    # Each trial is saved to results.pkl first, then its result file is written: a stop in between
    # leaves a trial without its file, written on resume, never a file of a trial that runs again.
    objective = local_objective(settings) if TRIAL_PROCESS else make_objective(settings)
    saved = found
    n = found
    drawn = None  # the model_name of the best model drawn to model_best.png
    search_start = time.time()
    errors = []  # the errors of this run's trials, while they all fail
    try:
        write_missing_result(trials, args.trials_file, settings.results_dir)
        while args.max_evals is None or len(trials.trials) < args.max_evals:
            raise_if_interrupted()
            n = len(trials.trials) + 1
            print(f"\n=== Trial {n}" + (f" of {args.max_evals}" if args.max_evals else "") + " ===",
                  flush=True)
            start = time.time()
            # fmin's return value raises while every trial failed
            with contextlib.suppress(AllTrialsFailed):
                fmin(objective, space, algo=tpe.suggest, trials=trials, max_evals=n,
                     show_progressbar=False,
                     # a new stream per trial, also when resumed
                     rstate=np.random.default_rng([settings.seed, n]))
            save_trials(trials, args.trials_file)
            saved = len(trials.trials)
            result = trials.trials[-1]["result"]
            save_result(result, settings.results_dir)
            tensorboard_runs.add_trial(result, settings)  # with --tensorboard: its HParams run
            print(f"Trial {n} took {time.time() - start:.0f} s, {describe(result)}")
            if errors is not None:
                errors = (errors + [str(result.get("error"))] if result.get("status") != "ok"
                          else None)
            if (errors and len(errors) >= SAME_FAILURES_STOP
                    and len({e.split(":")[0] for e in errors}) == 1):
                print(f"error: the first {len(errors)} trials of this run all failed with "
                      f"{errors[0].split(':')[0]}, so the setup, not the hyperspaces, is wrong: "
                      f"{errors[-1]}. Fix it, then run the same command again to resume (the "
                      f"failed trials are saved in {args.trials_file}).".replace("\n", " "),
                      file=sys.stderr)
                return 1
            if args.max_evals and n < args.max_evals:
                left = (time.time() - search_start) / (n - found) * (args.max_evals - n)
                print(f"About {duration(left)} left for {args.max_evals - n} more trials")
            drawn = show_best(trials, settings, drawn)
            raise_if_interrupted()
    except KeyboardInterrupt:
        print(f"\nInterrupted. The {saved} finished trials are saved in "
              f"{args.trials_file}: run the same command again to resume.")
        return 130
    except OSError as e:  # a write failed (a full disk): say what is saved, in one line
        sys.exit(f"error: {e}. The search stopped: "
                 f"{what_is_saved(saved, n, args.trials_file, settings.results_dir)}")
    if errors:  # too few to tell the setup from the hyperspaces, but not a success either
        warn(f"every trial of this run failed ({len(errors)}), last: {errors[-1]}")
    print_best(trials, settings.results_dir)
    return 0


def what_is_saved(saved, n, trials_file, results_dir):
    """What a search that stopped on a failed write at trial n has kept, and how to go on."""
    trials = f"{saved} finished trial{'' if saved == 1 else 's'}"
    if saved >= n:  # trial n is in results.pkl: its result file was not written
        return (f"the {trials} are saved in {trials_file}, and their result files in "
                f"{results_dir}/ but for trial {n}'s: free space, then run the same command again "
                f"to resume; it writes that file from {trials_file}.")
    return (f"trial {n} is lost; {trials_file} still holds the {trials} before it, and "
            f"{results_dir}/ their result files: free space, then run the same command again to "
            "resume.")


def run_mongo_search(args, settings):
    """The same search on hyperopt's MongoTrials: TPE queues trials in MongoDB, workers train them.

    Through a MongoDB outage of --stale-after at most, the driver waits and goes on; past it, one
    line and exit status 1 (the experiment stays in MongoDB: the same command resumes it)."""
    # --max-evals is the experiment's total, however many drivers queue its trials
    try:
        trials = mongo_search.connect(args.mongo, args.exp_key, max_evals=args.max_evals)
        mongo_search.store_settings(trials, settings.as_dict(), args.exp_key)  # workers read them
    except mongo_search.Unusable as e:
        sys.exit(f"error: {e}")
    found = len(trials.trials)
    todo = "until Ctrl-C" if args.max_evals is None else max(0, args.max_evals - found)
    print(f"Experiment {args.exp_key!r} at {mongo_search.shown(args.mongo)}: {settings.dataset}, "
          f"{settings.epochs} epochs per trial, trained by workers:\n"
          f"    {mongo_search.worker_command(args.mongo, args.exp_key)}")
    print(f"Found {found} trials of the experiment; {todo} more will be queued.", flush=True)

    requeue_lost = RequeueLostTrials(args.exp_key, args.stale_after)
    reported = {t["tid"] for t in trials.trials if t["state"] == JOB_STATE_DONE}
    drawn = [None]  # the model_name of the best model drawn to model_best.png

    def after_each_poll(trials, *_):
        """hyperopt calls its early_stop_fn after each look at MongoDB (every second): report,
        requeue."""
        requeue_lost(trials)
        for t in trials.trials:
            if t["state"] == JOB_STATE_DONE and t["tid"] not in reported:
                reported.add(t["tid"])
                print(f"Trial {t['tid']} done ({len(reported)} in all): {describe(t['result'])}")
                # with --tensorboard: its HParams run
                tensorboard_runs.add_trial(t["result"], settings)
                drawn[0] = show_best(trials, settings, drawn[0])
        return False, []  # never stops the search

    def search():
        # Silence is timed afresh, also after an outage: no heartbeat could get through it
        requeue_lost.unchanged_since = {}
        while True:
            with contextlib.suppress(AllTrialsFailed):  # fmin looks up the best trial as it returns
                fmin(make_objective(), space, algo=tpe.suggest, trials=trials,
                     max_evals=args.max_evals or sys.maxsize, show_progressbar=False,
                     return_argmin=False,
                     # each (re)start: new points
                     rstate=np.random.default_rng([settings.seed, len(trials.trials)]),
                     early_stop_fn=after_each_poll)
            # a trial whose worker stopped as fmin returned: wait for it too
            if not requeue_lost(trials):
                break
        trials.refresh()

    try:
        mongo_search.retry_while_unreachable(search, "queueing and watching trials",
                                             args.stale_after,
                                             probe=lambda: trials.handle.db.command("ping"))
    except KeyboardInterrupt:
        print("\nInterrupted. The experiment is in MongoDB and queued trials still run on the "
              "workers: run the same command again to resume.")
        return 130
    except mongo_search.Unreachable as e:
        sys.exit(f"error: {e}. The driver stopped; the experiment is kept in MongoDB: run the same "
                 "command again once MongoDB is back to resume it")
    print_best(trials, settings.results_dir)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    status = run_search(parse_args())
    # The search is over: a Ctrl-C during the interpreter's exit (Python then restores the default
    # handler, which kills the process with SIGINT) must not turn its exit status into a signal's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
