"""Lost workers: how a MongoDB search notices a trial whose worker died, and gives the trial to
another.

    worker (per trial)  Heartbeat: hyperopt's ctrl.checkpoint(), which stamps the job and gives it a
                        new version, every HEARTBEAT_EVERY_S from a thread for the whole trial (data
                        loading, model building, test scoring included), and at the start and after
                        each epoch, carrying the partial result of the trial's stopping rule where
                        it publishes one; TrialLost when the job was taken away; the result is
                        stored in the job before its result file is written, so a trial taken away
                        writes no file
    driver              RequeueLostTrials: a RUNNING job whose version has not changed for
                        --stale-after seconds lost its worker: back in the queue; failed after
                        MAX_LOST_RUNS such losses
    worker (process)    Stopped: SIGTERM, SIGINT or SIGHUP put the worker's trial back in the queue
                        (a stop asked for is not a lost worker: never counted)

hyperopt's MongoTrials alone leaves the trial of a dead worker RUNNING forever.
"""
import re
import signal
import threading
import time

import pymongo
from hyperopt import STATUS_FAIL, STATUS_NEW
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING, SONify
from hyperopt.mongoexp import OperationFailure
from hyperopt.utils import coarse_utcnow

from mongo_search import Unreachable, retry_while_unreachable

HEARTBEAT_EVERY_S = 2  # a running trial stamps its job this often, whatever it is doing
# The driver requeues a trial silent for --stale-after seconds. A healthy trial is silent for one
# heartbeat interval at most, plus a MongoDB round trip, plus, once, the moment between reserving
# the trial and its first beat (the trial's process unpickles the objective). Under 10 s (5
# intervals), a busy machine or a slow MongoDB answer would requeue healthy trials: refused.
MIN_STALE_AFTER_S = 10
# default: a dead worker's trial waits 10 minutes; ample for any pause of a healthy one
STALE_AFTER_S = 600
# a trial whose worker dies 3 times (stops asked for aside) probably kills it: failed
MAX_LOST_RUNS = 3


class TrialLost(BaseException):
    """The driver gave this trial to another worker (this one was silent too long): stop, record
    nothing.

    A BaseException, so that trial.run_trial does not record it as the trial's failure: the trial
    is not over, another worker runs it.
    """


class Heartbeat:
    """On a MongoDB worker: tell the driver this trial is alive, for as long as it runs.

    hyperopt's ctrl.checkpoint() stamps the job's refresh_time and gives it a new version; the
    driver requeues trials that stay silent (RequeueLostTrials, below). Used as a context manager
    around the whole trial, a thread beats every HEARTBEAT_EVERY_S seconds, so loading the data,
    building the model and scoring the test set are never silent; the trial also calls beat() as
    training starts and after each epoch (trial.run_trial's hooks), which raises TrialLost once a
    beat found the job taken away (the driver requeued it: this worker was silent too long).
    keep(result) stores the result in the job before the result file is written: no file for a
    trial taken away. Through a MongoDB outage the trial trains on (a beat not sent is said once),
    and keep and hyperopt's writes after the trial (its result, its state) wait for MongoDB,
    patience_s at most (--stale-after): a trial that finishes during an outage keeps its result.

    Every ctrl.checkpoint() of the trial (these beats, hyperopt's, a stopping rule's partial
    results) goes through one lock while the thread runs: hyperopt's checkpoint reads and bumps the
    job's version in place, which two threads at once would corrupt.
    """

    def __init__(self, ctrl, every_s=None, partial_result=None, patience_s=STALE_AFTER_S):
        self.ctrl, self.patience_s = ctrl, patience_s
        self.every_s = HEARTBEAT_EVERY_S if every_s is None else every_s
        # The stopping rule's progress (pruning.AshaRule.partial_result), stored by the epoch beats;
        # the thread's beats store nothing: hyperopt's checkpoint() without a result keeps the job's
        # result.
        self.partial_result = partial_result or (lambda: None)
        self.lost = None  # why the trial was taken from this worker, once a beat found out
        self._checkpoint = ctrl.checkpoint  # hyperopt's own
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._unreachable = False  # said once per MongoDB outage

    def _locked_checkpoint(self, result=None):
        with self._lock:
            return self._checkpoint(result)

    def __enter__(self):
        self.ctrl.checkpoint = self._locked_checkpoint
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback):
        self._stop.set()
        self._thread.join()
        self.ctrl.checkpoint = self._checkpoint
        # hyperopt's writes after the trial wait for MongoDB too
        if not isinstance(exc, Unreachable):
            handle = self.ctrl.trials.handle
            update = handle.update
            handle.update = lambda *args, **kwargs: retry_while_unreachable(
                lambda: update(*args, **kwargs),
                f"storing the end of trial {self.ctrl.current_trial['tid']}",
                self.patience_s)

    def _run(self):
        while self._send() and not self._stop.wait(self.every_s):
            pass

    def _send(self, result=None, partial=False):
        """One checkpoint of the job (with result: stored in it); False once the trial was taken
        from this worker. A partial result not sent (MongoDB unreachable) goes with the next
        epoch's beat."""
        with self._lock:
            if self.lost:
                return False
            try:
                self._checkpoint(None if result is None else SONify(result))
            # no job at the version this worker holds: the driver requeued it
            except OperationFailure as e:
                # hyperopt then writes nothing more to the job for this worker
                self.ctrl.read_only = True
                self.lost = (f"trial {self.ctrl.current_trial['tid']} was requeued by the driver: "
                             f"{e}")
                return False
            # MongoDB unreachable for now: train on, beat again
            except pymongo.errors.ConnectionFailure as e:
                if result is not None and not partial:
                    raise
                if not self._unreachable:
                    print(f"Heartbeat not sent ({type(e).__name__}), will try again", flush=True)
                self._unreachable = True
                return True
            self._unreachable = False
            return True

    def beat(self):
        """As training starts and after each epoch: a beat carrying the rule's partial result."""
        # a stop signal whose exception Python dropped (see Stopped)
        if Stopped.received is not None:
            raise Stopped(Stopped.received)
        if not self._send(self.partial_result(), partial=True):
            raise TrialLost(self.lost)

    def keep(self, result):
        """Store the trial's result in its job, as long as this worker still holds the job;
        TrialLost otherwise.

        Called before the result file is written: a trial that MongoDB gave to another worker, or
        marked failed, gets no result file from this one. Waits through an outage of patience_s at
        most (Unreachable past it: no result file either, the driver runs the trial again).
        """
        if Stopped.received is not None:
            raise Stopped(Stopped.received)
        what = f"storing the result of trial {self.ctrl.current_trial['tid']}"
        if not retry_while_unreachable(lambda: self._send(result), what, self.patience_s):
            raise TrialLost(self.lost)


class Stopped(BaseException):
    """SIGTERM, SIGINT or SIGHUP: the worker stops, and its trial goes back to the queue.

    hyperopt raises mongoexp.Shutdown from its handlers of these signals; that one is an Exception,
    so the trial would record it as its failure. This one is not: hyperopt marks the job as errored
    and the driver requeues it. Later signals are ignored (Ctrl-C reaches the worker and its trial's
    process, and the worker then signals that process again) so that the job is released in peace.
    A signal that lands in a gc callback (keras' clear_session collects; jax registers a callback)
    raises there, and Python only prints the exception: so it is also recorded in `received`, and
    the trial's next heartbeat on the main thread (Heartbeat.beat, keep) raises it again.
    """

    received = None  # the signal, once one came

    def __init__(self, *args):
        super().__init__(*args)
        Stopped.received = args[0] if args else True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


def signal_name(number):
    """SIGTERM for "15" (hyperopt stores the signal of a stop as its error message)."""
    try:
        return signal.Signals(int(number)).name
    except ValueError:
        return f"signal {number}"


class RequeueLostTrials:
    """Put back in the queue the trials whose worker died or stopped; mark them failed after
    MAX_LOST_RUNS.

    A running trial's job gets a new version at each heartbeat (Heartbeat calls hyperopt's
    ctrl.checkpoint every HEARTBEAT_EVERY_S seconds). A RUNNING job whose version has not changed
    for stale_after seconds, timed on this machine (worker clocks may differ), lost its worker:
    killed, out of memory, machine gone. A job in hyperopt's ERROR state lost it too: the worker was
    stopped (SIGTERM, Ctrl-C: a stop asked for, requeued without counting towards MAX_LOST_RUNS,
    however often it comes) or could not start the trial (hks's trials report their own failures
    as results). Each update applies only to the version seen, so a heartbeat arriving meanwhile
    wins; and the old worker, had it been only slow (cut off by the network), cannot write to the
    job any more and stops training at its next heartbeat (see requeue).
    """

    def __init__(self, exp_key, stale_after, log=print):
        self.exp_key, self.stale_after, self.log = exp_key, stale_after, log
        # job _id -> (version, time.monotonic() when that version was first seen)
        self.unchanged_since = {}

    def __call__(self, trials):
        """Check the experiment's jobs once; return how many were requeued or failed."""
        now = time.monotonic()
        jobs = trials.handle.jobs
        query = {"exp_key": self.exp_key, "state": {"$in": [JOB_STATE_RUNNING, JOB_STATE_ERROR]}}
        lost, seen = [], {}
        for job in jobs.find(query,
                             projection=["tid", "state", "owner", "version", "error", "lost_runs"]):
            # hyperopt stored ("<class 'module.Name'>", message)
            if job["state"] == JOB_STATE_ERROR:
                kind, detail = (list(map(str, job.get("error") or ["?"])) + [""])[:2]
                kind = re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", kind)
                if kind == "Stopped":  # a stop asked for (docker stop, Ctrl-C): not a lost worker
                    lost.append((job, f"its worker was stopped ({signal_name(detail)})", False))
                else:  # the trial's process failed before the trial could record a result
                    lost.append((job, f"its worker failed to run it ({kind}: {detail})", True))
                continue
            version, since = self.unchanged_since.get(job["_id"], (None, now))
            seen[job["_id"]] = (job["version"], since if version == job["version"] else now)
            if now - seen[job["_id"]][1] >= self.stale_after:
                owner = job.get("owner") or ["?"]
                lost.append((job, f"no heartbeat from {owner[0]} for {self.stale_after:g} s", True))
        self.unchanged_since = seen
        return sum(self.requeue(jobs, job, why, counted) for job, why, counted in lost)

    def requeue(self, jobs, job, why, counted=True):
        """Back in the queue, or failed at the MAX_LOST_RUNS-th counted loss; a stop asked for (not
        counted) always goes back."""
        lost_runs = job.get("lost_runs", 0) + counted
        if lost_runs < MAX_LOST_RUNS:
            # A new job's result: the partial result of the dead run must not count as progress
            # (pruning.py)
            change = {"state": JOB_STATE_NEW, "owner": None, "book_time": None,
                      "refresh_time": None, "result": {"status": STATUS_NEW}}
            outcome = (f"back in the queue (lost run {lost_runs})" if counted
                       else "back in the queue")
        else:
            error = f"lost its worker {lost_runs} times, last: {why}"
            change = {"state": JOB_STATE_DONE, "refresh_time": coarse_utcnow(),
                      "result": {"status": STATUS_FAIL, "error": error, "trial_id": job["tid"]}}
            guess = " (killed, out of memory?)" if why.startswith("no heartbeat") else ""
            outcome = f"marked failed: {error}{guess}"
        # Two versions on. hyperopt writes a job only where its version is the one the worker holds,
        # then checks for one version on: so the old worker's next heartbeat writes nothing and
        # fails, after which it writes nothing more (Heartbeat), and its one last try, marking the
        # job as errored, is again one version short.
        now_seen = {"_id": job["_id"], "state": job["state"], "version": job["version"]}
        done = jobs.find_one_and_update(now_seen, {"$set": {**change, "version": job["version"] + 2,
                                                            "lost_runs": lost_runs},
                                                   "$unset": {"error": ""}})
        if done:
            self.log(f"Trial {job['tid']}: {why}: {outcome}.")
        return int(done is not None)
