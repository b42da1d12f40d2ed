#!/usr/bin/env python3
"""A MongoDB worker: trains the trials that `hyperopt_optimize.py --mongo` queues, until stopped.

    python3 hyperopt_worker.py --mongo mongo://HOST:PORT/DB/jobs --exp-key NAME
    # or: make run_hyperopt_worker

This is hyperopt's own hyperopt-mongo-worker (one fresh process per trial, so each trial starts
with all the GPU memory), plus: the pymongo 4 compatibility layer (mongo_compat.py); a wait for
the experiment's driver; a check that the experiment's dataset is on this machine before any
trial is taken. Every trial setting (epochs, dataset, train subset, validation, seed) comes from
the experiment, as its driver stored it, never from this machine's environment. The driver's
--data-dir and --results-dir, when relative (the defaults ml_req and results), are folders of the
directory this worker runs in. Other options go to hyperopt-mongo-worker (--poll-interval,
--max-jobs, --no-subprocesses, ...). Ctrl-C or SIGTERM stops the worker; its trial goes back to
the queue. Each trial's process first checks that the experiment is still of this worker's version
and that its objective loads here. Through a MongoDB outage of the experiment's --stale-after at
most, the worker waits (a trial trains on, and keeps its result); past it, or for an experiment of
another version, the worker stops with one line and exit status 3 (WORKER_MUST_STOP), so that a
supervisor restarts it or a person reads why. The MongoDB password reaches the per-trial processes
in MONGO_DB_PASSWORD, never in their command line (which ps shows to every user of the machine).
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import types

# before Keras loads TensorFlow: no start-up INFO lines
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import pymongo  # noqa: E402
from hyperopt import mongoexp  # noqa: E402

import mongo_compat  # noqa: E402
import mongo_search  # noqa: E402
from lost_workers import STALE_AFTER_S, Stopped  # noqa: E402
from data import DataError, clear_cache  # noqa: E402
from settings import Settings  # noqa: E402

# set once this worker has checked: its per-trial processes skip the checks
CHECKED = "HKS_WORKER_CHECKED"
# the experiment's --stale-after for the per-trial processes: their wait for MongoDB
PATIENCE = "HKS_STALE_AFTER"
# a trial's process exits so when the whole worker must stop (its one line says why)
WORKER_MUST_STOP = 3


class TrialProcess(subprocess.Popen):
    """A trial's process as hyperopt's worker loop starts it: WORKER_MUST_STOP stops the worker
    too, with that status (hyperopt's loop would start another, and quit with status 0 after 4
    failures)."""

    def wait(self, timeout=None):
        status = super().wait(timeout)
        if status == WORKER_MUST_STOP:
            raise SystemExit(status)
        return status


def patient_reserve(reserve, patience_s):
    """hyperopt's MongoJobs.reserve, waiting through a MongoDB outage of patience_s at most."""
    def reserve_through_outages(jobs, *args, **kwargs):
        return mongo_search.retry_while_unreachable(lambda: reserve(jobs, *args, **kwargs),
                                                    "waiting for a trial", patience_s)
    return reserve_through_outages


def check_experiment(url, exp_key, patience_s):
    """In each trial's process, before it takes a trial: the experiment is still of this worker's
    version and its objective loads here (a driver of another version may have resumed it since the
    worker started). VersionMismatch or Unreachable otherwise."""
    def check():
        trials = mongoexp.MongoTrials(url, exp_key=exp_key, refresh=False)
        mongo_search.check_version(json.loads(trials.attachments[mongo_search.SETTINGS]), exp_key,
                                   "worker")
        mongo_search.check_objective_loads(trials, exp_key)

    mongo_search.retry_while_unreachable(check, "checking the experiment", patience_s)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--mongo", metavar="URL",
                   default=mongo_search.url_from_env(default_host="localhost"),
                   help=f"the experiment's MongoDB, {mongo_search.URL_FORM} (env MONGO_DB_HOST, "
                        "default localhost, "
                        "MONGO_DB_PORT, MONGO_DB_NAME, MONGO_DB_USER, MONGO_DB_PASSWORD)")
    p.add_argument("--exp-key", default=os.environ.get("EXPERIMENT_NAME") or "hks",
                   help="the experiment's name, as given to its driver (env EXPERIMENT_NAME; "
                        "default %(default)s)")
    args, hyperopt_options = p.parse_known_args(argv)
    # mongo://HOST:PORT/DB, as hyperopt starts the per-trial processes
    if args.mongo.count("/") == 3:
        args.mongo += "/jobs"
    return args, hyperopt_options


def check_data_or_exit(settings):
    """A worker without the experiment's dataset would fail every trial it takes: refuse to start
    instead."""
    try:
        split = Settings.from_dict(settings).load_split()
    except DataError as e:
        sys.exit(f"error: {e} (this worker's folder: {os.getcwd()})")
    print(f"Dataset found: {settings['dataset']}, {len(split.x_train)} training images.",
          flush=True)
    clear_cache()  # each trial loads it again, in its own process


def main(argv=None):
    args, hyperopt_options = parse_args(argv)
    trial_process = os.environ.get(CHECKED) == "1"  # started by this worker to run one trial
    mongo_compat.install()
    mongoexp.Shutdown = Stopped  # hyperopt raises (and catches) mongoexp.Shutdown on those signals
    if not trial_process:
        try:
            trials = mongo_search.connect(args.mongo, args.exp_key, refresh=False)
            settings = mongo_search.wait_for_settings(trials, args.exp_key, args.mongo,
                                                      STALE_AFTER_S)
            mongo_search.check_version(settings, args.exp_key, "worker")
        except (mongo_search.Unusable, mongo_search.Unreachable,
                mongo_search.VersionMismatch) as e:
            sys.exit(f"error: {e}")
        # the experiment's, not this machine's
        os.environ[PATIENCE] = str(settings.get("stale_after", STALE_AFTER_S))
        check_data_or_exit(settings)
        print(f"Worker for experiment {args.exp_key!r} at {mongo_search.shown(args.mongo)}: "
              f"taking trials "
              f"({settings['epochs']} epochs each).", flush=True)
        os.environ[CHECKED] = "1"
        # Each trial runs in a new process started as this file, by its #! line: make that line's
        # python3 this interpreter.
        os.environ["PATH"] = (os.path.dirname(sys.executable) + os.pathsep
                              + os.environ.get("PATH", ""))

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # its INFO says "no job found" every poll
    logging.getLogger("hyperopt.mongoexp").setLevel(logging.WARNING)
    # --workdir: hyperopt's default is a new folder per trial, where relative paths would break;
    # --reserve-timeout: wait for trials as long as it takes (hyperopt's default: 2 minutes)
    defaults = {"--workdir": os.getcwd(),
                "--reserve-timeout": "inf"}
    given = {option.split("=")[0] for option in hyperopt_options}
    try:
        password = mongo_search.password_of(args.mongo)
    except mongo_search.Unusable as e:  # a user without a password
        sys.exit(f"error: {e}")
    # hyperopt starts each trial's process with --mongo=URL: the password goes by env
    if password is not None:
        os.environ["MONGO_DB_PASSWORD"] = password
    url = mongo_search.without_password(args.mongo)[:-len("/jobs")]
    sys.argv = [os.path.abspath(__file__), f"--mongo={url}", f"--exp-key={args.exp_key}",
                *[f"{k}={v}" for k, v in defaults.items() if k not in given], *hyperopt_options]
    # how hyperopt's loop starts trial processes
    mongoexp.subprocess = types.SimpleNamespace(Popen=TrialProcess)
    patience_s = float(os.environ.get(PATIENCE) or STALE_AFTER_S)
    mongoexp.MongoJobs.reserve = patient_reserve(mongoexp.MongoJobs.reserve, patience_s)
    try:
        if trial_process:
            check_experiment(args.mongo, args.exp_key, patience_s)
        return mongoexp.main_worker()
    # a trial's process, stopped by its worker: the job is marked for the driver to requeue
    except Stopped:
        print("Trial process stopped.", flush=True)
        return 1
    # this worker can do nothing more
    except (mongo_search.Unreachable, mongo_search.VersionMismatch) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return WORKER_MUST_STOP
    # an outage between the waits: the driver requeues the trial
    except pymongo.errors.ConnectionFailure as e:
        # hyperopt's last write, after a wait for MongoDB
        if isinstance(e.__context__, mongo_search.Unreachable):
            print(f"error: {e.__context__}", file=sys.stderr, flush=True)
            return WORKER_MUST_STOP
        print(f"error: MongoDB unreachable, this trial's process stopped "
              f"({mongo_search.reason_of(e)}): the "
              f"worker starts another", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    sys.exit(main())
