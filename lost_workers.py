"""Lost workers: how a MongoDB search notices a trial whose worker died, and gives the trial to another.

    worker (per trial)   Heartbeat: hyperopt's ctrl.checkpoint() at the start and after each epoch, which
                         stamps the job and gives it a new version (and stores the trial's partial result,
                         where its stopping rule publishes one); TrialLost when the job was taken away
    driver               RequeueLostTrials: a RUNNING job whose version has not changed for --stale-after
                         seconds lost its worker: back in the queue; failed after MAX_LOST_RUNS
    worker (process)     Stopped: SIGTERM, SIGINT or SIGHUP put the worker's trial back in the queue

hyperopt's MongoTrials alone leaves the trial of a dead worker RUNNING forever.
"""
import re
import signal
import time

import keras
import pymongo
from hyperopt import STATUS_FAIL
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING
from hyperopt.mongoexp import OperationFailure
from hyperopt.utils import coarse_utcnow

STALE_AFTER_S = 600  # default: longer than any epoch (a trial's heartbeats come once an epoch)
MAX_LOST_RUNS = 3  # a trial whose worker dies 3 times probably kills it (out of memory): marked failed


class TrialLost(BaseException):
    """The driver gave this trial to another worker (this one was silent too long): stop, record nothing.

    A BaseException, so that build_and_train does not record it as the trial's failure: the trial
    is not over, another worker runs it.
    """


class Heartbeat(keras.callbacks.Callback):
    """On a MongoDB worker: tell the driver this trial is alive, as training starts and after each epoch.

    hyperopt's ctrl.checkpoint() stamps the job's refresh_time and gives it a new version; the
    driver requeues trials that stay silent (RequeueLostTrials, below). It fails once the
    driver has requeued the job (this worker was silent too long), and then the trial stops here.
    """

    def __init__(self, ctrl, partial_result=None):
        super().__init__()
        self.ctrl = ctrl
        self.partial_result = partial_result or (lambda: None)  # stored with the beat (objective.py)

    def beat(self):
        try:
            self.ctrl.checkpoint(self.partial_result())  # None: only the stamp, the job's result is kept
        except OperationFailure as e:  # no job at the version this worker holds: the driver requeued it
            self.ctrl.read_only = True  # hyperopt then writes nothing more to the job for this worker
            raise TrialLost(f"trial {self.ctrl.current_trial['tid']} was requeued by the driver: {e}") from None
        except pymongo.errors.ConnectionFailure as e:  # MongoDB unreachable for now: train on, beat next epoch
            print(f"Heartbeat not sent ({type(e).__name__}), will try again after the next epoch", flush=True)

    def on_train_begin(self, logs=None):
        self.beat()

    def on_epoch_end(self, epoch, logs=None):
        self.beat()


class Stopped(BaseException):
    """SIGTERM, SIGINT or SIGHUP: the worker stops, and its trial goes back to the queue.

    hyperopt raises mongoexp.Shutdown from its handlers of these signals; that one is an Exception,
    so the trial would record it as its failure. This one is not: hyperopt marks the job as errored
    and the driver requeues it. Later signals are ignored (Ctrl-C reaches the worker and its trial's
    process, and the worker then signals that process again) so that the job is released in peace.
    """

    def __init__(self, *args):
        super().__init__(*args)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


class RequeueLostTrials:
    """Put back in the queue the trials whose worker died or stopped; mark them failed after MAX_LOST_RUNS.

    A running trial's job gets a new version at each heartbeat (Heartbeat calls hyperopt's
    ctrl.checkpoint once an epoch). A RUNNING job whose version has not changed for stale_after
    seconds, timed on this machine (worker clocks may differ), lost its worker: killed, out of
    memory, machine gone. A job in hyperopt's ERROR state lost it too: the worker was stopped
    (SIGTERM, Ctrl-C) or could not start the trial (hks's trials report their own failures as
    results). Each update applies only to the version seen, so a heartbeat arriving meanwhile
    wins; and the old worker, had it been only slow (cut off by the network), can no longer write
    to the job and stops training at its next heartbeat (see requeue).
    """

    def __init__(self, exp_key, stale_after, log=print):
        self.exp_key, self.stale_after, self.log = exp_key, stale_after, log
        self.unchanged_since = {}  # job _id -> (version, time.monotonic() when that version was first seen)

    def __call__(self, trials):
        """Check the experiment's jobs once; return how many were requeued or failed."""
        now = time.monotonic()
        jobs = trials.handle.jobs
        query = {"exp_key": self.exp_key, "state": {"$in": [JOB_STATE_RUNNING, JOB_STATE_ERROR]}}
        lost, seen = [], {}
        for job in jobs.find(query, projection=["tid", "state", "owner", "version", "error", "lost_runs"]):
            if job["state"] == JOB_STATE_ERROR:  # hyperopt stored ("<class 'module.Name'>", message)
                error = re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", ": ".join(map(str, job.get("error") or ["?"])))
                lost.append((job, f"its worker stopped ({error})"))
                continue
            version, since = self.unchanged_since.get(job["_id"], (None, now))
            seen[job["_id"]] = (job["version"], since if version == job["version"] else now)
            if now - seen[job["_id"]][1] >= self.stale_after:
                owner = job.get("owner") or ["?"]
                lost.append((job, f"no heartbeat from {owner[0]} for {self.stale_after:g} s"))
        self.unchanged_since = seen
        return sum(self.requeue(jobs, job, why) for job, why in lost)

    def requeue(self, jobs, job, why):
        lost_runs = job.get("lost_runs", 0) + 1
        if lost_runs < MAX_LOST_RUNS:
            change = {"state": JOB_STATE_NEW, "owner": None, "book_time": None, "refresh_time": None}
            outcome = f"back in the queue (lost run {lost_runs})"
        else:
            change = {"state": JOB_STATE_DONE, "refresh_time": coarse_utcnow(),
                      "result": {"status": STATUS_FAIL, "error": f"lost its worker {lost_runs} times, last: {why}",
                                 "trial_id": job["tid"]}}
            outcome = f"marked failed: lost its worker {lost_runs} times (out of memory?)"
        # Two versions on. hyperopt writes a job only where its version is the one the worker holds, then
        # checks for one version on: so the old worker's next heartbeat writes nothing and fails, after
        # which it writes nothing more (Heartbeat), and its one last try, marking the job as
        # errored, is again one version short.
        now_seen = {"_id": job["_id"], "state": job["state"], "version": job["version"]}
        done = jobs.find_one_and_update(now_seen, {"$set": {**change, "version": job["version"] + 2,
                                                            "lost_runs": lost_runs},
                                                   "$unset": {"error": ""}})
        if done:
            self.log(f"Trial {job['tid']}: {why}: {outcome}.")
        return int(done is not None)
