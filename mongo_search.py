"""The search on many machines: what hyperopt's MongoTrials leaves out.

    python3 hyperopt_optimize.py --mongo mongo://HOST:PORT/DB/jobs --exp-key NAME   # the driver
    python3 hyperopt_worker.py   --mongo mongo://HOST:PORT/DB/jobs --exp-key NAME   # each worker

hyperopt's own engine does the work: the driver queues the trials TPE proposes in MongoDB, and
workers (hyperopt-mongo-worker processes) reserve and train them. This module adds the pieces
hyperopt lacks: a one-line error when MongoDB cannot be used, the experiment's settings stored
next to its trials (so a resumed driver cannot change the budget and workers can check their
data), --max-evals as the experiment's total however many drivers queue its trials
(ExperimentTrials), the password kept out of command lines (mongo://USER@...: the password is
MONGO_DB_PASSWORD's) and out of messages, the experiment's format version that drivers and workers
check, and the wait through MongoDB outages of up to --stale-after (retry_while_unreachable). The
requeueing of trials whose worker died, which hyperopt leaves RUNNING forever, is in
lost_workers.py.
"""
import json
import os
import re
import shlex
import time
import urllib.parse

import pymongo
from hyperopt import mongoexp
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING
from hyperopt.mongoexp import MongoTrials

import mongo_compat
from record import METRIC

# hyperopt's workers read DB/jobs, so jobs it is
URL_FORM = "mongo://[USER[:PASSWORD]@]HOST:PORT/DB/jobs"
# USER without :PASSWORD: the password is MONGO_DB_PASSWORD's (so that it stays out of command
# lines)
_URL = re.compile(r"mongo://(?:(?P<user>[^:@/]+)(?::(?P<password>[^@/]*))?@)?"
                  r"(?P<host>[^:@/]+):(?P<port>\d+)"
                  r"/(?P<db>[\w-]+)/jobs")
AUTHENTICATION_FAILED = 18  # MongoDB's error code for a wrong user or password
# a MongoDB that does not answer in 5 s is down or unreachable: say so, do not hang
CONNECT_TIMEOUT_S = 5
SLOT = "hks_slot"  # a trial's place among the experiment's max_evals (ExperimentTrials)
# the experiment's trial settings, a JSON attachment of its trials in GridFS
SETTINGS = "hks_settings"
# Settings a resumed experiment may change: folders on each worker, and how long a worker may stay
# silent
LOCAL_SETTINGS = ("data_dir", "results_dir", "verbose", "stale_after")
# The version of an experiment's format (its settings, its trials, the objective workers load),
# stored with its settings; drivers and workers of another version refuse it. Experiments stored
# without it: version 1.
VERSION = "hks_experiment_version"
EXPERIMENT_VERSION = 2
# Settings that experiments of version 1 may lack, and the values that behave as that version does:
# version 1 has no asha, and without it these change nothing.
ADDED_SETTINGS = {"prune_eta": 3, "prune_min_epochs": 1}
# hyperopt's attachment holding the pickled objective and space that workers load
DOMAIN = "FMinIter_Domain"


def url_from_env(default_host=None):
    """mongo://... from MONGO_DB_HOST, MONGO_DB_PORT, MONGO_DB_NAME, MONGO_DB_USER,
    MONGO_DB_PASSWORD.

    None when MONGO_DB_HOST is unset and there is no default_host: the driver then searches locally.
    """
    host = os.environ.get("MONGO_DB_HOST") or default_host
    if not host:
        return None
    user, password = os.environ.get("MONGO_DB_USER"), os.environ.get("MONGO_DB_PASSWORD", "")
    auth = (f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
            if user else "")
    return (f"mongo://{auth}{host}:{os.environ.get('MONGO_DB_PORT') or 27017}/"
            f"{os.environ.get('MONGO_DB_NAME') or 'hyperopt'}/jobs")


def shown(url):
    """The URL for messages: *** for whatever stands between :// and the last @ that may be a
    password.

    A password holding an unencoded / or @ makes the URL malformed; the user's name is kept only
    when nothing of the password can be in it."""
    # greedy: up to the last @
    m = re.match(r"(?P<scheme>[^:/@]*://)(?P<credentials>.*)@", url or "")
    if not m:
        return url
    user, colon, _ = m["credentials"].partition(":")
    if re.search(r"[/@]", user):  # part of a password may be in it
        user = "***"
    elif colon:
        user += ":***"
    return m["scheme"] + user + url[m.end() - 1:]


def without_password(url):
    """mongo://USER@...: the URL to give other processes, which take the password from
    MONGO_DB_PASSWORD."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1@", url)


def worker_command(url, exp_key):
    """The command that starts a worker of the experiment, to copy and paste: the password stays
    out of it."""
    command = (f"python3 hyperopt_worker.py --mongo {shlex.quote(without_password(url))} "
               f"--exp-key {shlex.quote(exp_key)}")
    user = parse_url(url)["user"]
    if user:
        command += (f"   # the password of {urllib.parse.unquote(user)}: "
                    f"MONGO_DB_PASSWORD in the worker's environment")
    return command


def password_of(url):
    """The password of the URL's user (percent-decoded): its own, else MONGO_DB_PASSWORD; None
    without a user."""
    m = parse_url(url)
    if not m["user"]:
        return None
    if m["password"] is not None:
        return urllib.parse.unquote(m["password"])
    password = os.environ.get("MONGO_DB_PASSWORD")
    if password is None:
        user = urllib.parse.unquote(m["user"])
        raise Unusable(f"--mongo {shown(url)} names user {user!r} but no password: set "
                       f"MONGO_DB_PASSWORD (or give mongo://USER:PASSWORD@...)")
    return password


PERCENT_ENCODE = ("percent-encode the password (python3 -c \"import urllib.parse; "
                  "print(urllib.parse.quote("
                  "'PASSWORD', safe=''))\"), or leave it out of the URL (mongo://USER@...) "
                  "and set MONGO_DB_PASSWORD")


class Unusable(Exception):
    """MongoDB cannot be used as asked (a malformed URL, no password, unreachable, another
    experiment's settings): the one-line message says what to do. The commands print it and exit."""


def parse_url(url):
    """The parts of a mongo://[USER[:PASSWORD]@]HOST:PORT/DB/jobs URL (a re.Match), or Unusable."""
    match = _URL.fullmatch(url or "")
    if not match:
        credentials = re.match(r"[^:/@]*://.*@", url or "")
        advice = f": {PERCENT_ENCODE}" if credentials else ""
        raise Unusable(f"--mongo must look like {URL_FORM}, not {shown(url or '')!r}{advice}")
    return match


class ExperimentTrials(MongoTrials):
    """hyperopt's MongoTrials of one experiment, holding max_evals trials at most, however many
    drivers queue them.

    hyperopt's fmin stops after queueing max_evals minus the trials it found as it started, counting
    only the ones it queued itself: two drivers started together with --max-evals 3 queue 6. Here
    each trial takes a numbered slot of the experiment (field hks_slot, "EXP_KEY#N") as it is
    inserted, and a unique index on the slots makes MongoDB give each slot once, atomically: a
    driver that finds all max_evals slots taken inserts nothing more. The insert is the
    reservation, so a driver that dies holds no slot; trials queued without a slot count too.
    """

    def __init__(self, *args, max_evals=None, **kwargs):
        self._known = {}  # job _id -> its document, as refresh() last read it
        super().__init__(*args, **kwargs)
        self.max_evals, self.refused = max_evals, 0
        # What the driver, the workers and the stopping rules look trials up by (hyperopt indexes
        # the experiment alone): without it, each look-up scans the experiment
        self.handle.jobs.create_index([("exp_key", 1), ("state", 1), ("result.loss", 1)])
        if max_evals is not None:
            # sparse: other trials have no slot
            self.handle.jobs.create_index(SLOT, unique=True, sparse=True)

    def refresh(self):
        """hyperopt's refresh (the experiment's trials but errored ones, in the order of their _id),
        reading only what changed: its cost does not grow with the experiment.

        hyperopt's own reads the _id and version of every trial, then every trial whose version
        changed: each heartbeat gives a running trial a new version, so every running trial, with
        its partial result, every time. A finished trial never changes again: it is read once.
        Running and queued ones are read once too, then only their state and owner (what the driver
        reads of them: their partial results are for the stopping rules, and they have no loss
        yet); a trial is read again when it leaves those states.
        """
        if self._exp_key is None:
            return super().refresh()
        jobs, exp, known = self.handle.jobs, {"exp_key": self._exp_key}, self._known
        done = jobs.count_documents({**exp, "state": JOB_STATE_DONE})  # first: none finishes unseen
        running = {**exp, "state": {"$in": [JOB_STATE_NEW, JOB_STATE_RUNNING]}}
        unfinished = {d["_id"]: d for d in jobs.find(running, projection=["state", "owner"])}
        left = [i for i, d in known.items() if d["state"] != JOB_STATE_DONE and i not in unfinished]
        for i in left:  # finished, errored (hyperopt leaves those out), or deleted
            del known[i]
        read = left + [i for i in unfinished if i not in known]
        if read:
            changed = jobs.find({"_id": {"$in": read}, "state": {"$ne": JOB_STATE_ERROR}})
            known.update((d["_id"], d) for d in changed)
        for i, d in unfinished.items():
            if i in known and known[i]["state"] != JOB_STATE_DONE:
                known[i].update(state=d["state"], owner=d.get("owner"))
        if sum(d["state"] == JOB_STATE_DONE for d in known.values()) < done:  # finished unseen
            finished = jobs.find({**exp, "state": JOB_STATE_DONE}, projection={"_id": 1})
            ids = [d["_id"] for d in finished]
            unseen = [i for i in ids if i not in known]
            known.update((d["_id"], d) for d in jobs.find({"_id": {"$in": unseen}}))
        self._trials = [known[i] for i in sorted(known)]
        self._specs = [t["spec"] for t in self._trials]
        self._results = [t["result"] for t in self._trials]
        self._miscs = [t["misc"] for t in self._trials]

    def _insert_trial_docs(self, docs):
        if self.max_evals is None:
            return super()._insert_trial_docs(docs)
        jobs, inserted = self.handle.jobs, []
        for doc in docs:
            slot = jobs.count_documents({"exp_key": self._exp_key})
            while slot < self.max_evals:
                doc[SLOT] = f"{self._exp_key}#{slot}"
                try:
                    inserted.append(jobs.insert_one(doc).inserted_id)
                    break
                except pymongo.errors.DuplicateKeyError:  # another driver took this slot just now
                    slot += 1
            else:  # fmin goes on polling (and requeueing) until the experiment's trials are done
                if not self.refused:
                    print(f"Experiment {self._exp_key!r} has all its {self.max_evals} trials "
                          f"(--max-evals), counting "
                          f"those of any other driver: this driver queues no more.", flush=True)
                self.refused += 1
        return inserted


def reason_of(error):
    """The first line of pymongo's error, without the timeouts and topology it appends."""
    return (str(error).split(" (configured timeouts")[0].split(", full error")[0]
            .splitlines()[0].rstrip("."))


class Unreachable(Exception):
    """MongoDB stayed unreachable for longer than the experiment's --stale-after."""


def retry_while_unreachable(call, what, patience_s, probe=None, pause_s=1):
    """call()'s value, through an outage of MongoDB (a restart, a network cut) of patience_s at
    most.

    When MongoDB is unreachable, says so once, waits until probe() (default: call itself; one cheap
    request) gets through, says so, and calls again; Unreachable once patience_s pass without an
    answer. Only for calls that are safe to repeat. pymongo retries a read (and, on replica sets, a
    write) once by itself; this covers outages longer than its server selection timeout.
    """
    since, attempt = None, call
    while True:
        try:
            value = attempt()
        # AutoReconnect, ServerSelectionTimeoutError, NetworkTimeout
        except pymongo.errors.ConnectionFailure as e:
            if since is None:
                since = time.monotonic()
                print(f"MongoDB unreachable while {what} ({reason_of(e)}): waiting for it, "
                      f"{patience_s:g} s at "
                      f"most (--stale-after)", flush=True)
            elif time.monotonic() - since >= patience_s:
                raise Unreachable(f"MongoDB unreachable for {patience_s:g} s (--stale-after) "
                                  f"while {what}: "
                                  f"{reason_of(e)}") from None
            time.sleep(pause_s)
            attempt = probe or call
            continue
        if since is None:
            return value
        print(f"MongoDB is back after {time.monotonic() - since:.0f} s: going on.", flush=True)
        if attempt is call:
            return value
        since, attempt = None, call


def check_objective_loads(trials, exp_key):
    """VersionMismatch when the objective that the experiment's driver stored does not load here."""
    try:
        blob = trials.attachments[DOMAIN]
    except KeyError:  # no driver has queued trials yet
        return
    try:
        mongoexp.pickler.loads(blob)
    # whatever unpickling raises (a module moved, a class renamed)
    except Exception as e:  # noqa: BLE001
        raise VersionMismatch(
            f"this worker cannot load the objective of experiment {exp_key!r} "
            f"({type(e).__name__}: {e}): it was "
            f"queued by another version of hks: restart the experiment's driver with this version "
            f"(it stores "
            f"the objective anew), or run this worker from the driver's version") from None


def connect(url, exp_key, refresh=True, max_evals=None):
    """hyperopt's MongoTrials of the experiment (refresh: with its trials loaded; max_evals:
    queueing no more than that many trials in all, see ExperimentTrials); Unusable, saying why,
    when MongoDB cannot be used."""
    mongo_compat.install()  # before any connection: they then authenticate

    m = parse_url(url)
    user = urllib.parse.unquote(m["user"]) if m["user"] else None
    client = pymongo.MongoClient(m["host"], int(m["port"]),
                                 serverSelectionTimeoutMS=CONNECT_TIMEOUT_S * 1000,
                                 username=user, password=password_of(url))
    try:
        client.admin.command("ping")  # also authenticates, when the URL has a user
    except pymongo.errors.PyMongoError as e:
        # MongoDB runs: the advice below would mislead
        if getattr(e, "code", None) == AUTHENTICATION_FAILED:
            raise Unusable(f"cannot use MongoDB at {shown(url)}: authentication failed for user "
                           f"{user!r}: check MONGO_DB_USER and MONGO_DB_PASSWORD (or USER:PASSWORD "
                           f"in --mongo)") from None
        raise Unusable(f"cannot use MongoDB at {shown(url)}: {reason_of(e)}. Start it (see "
                       f"local_infra/) or fix --mongo (env MONGO_DB_HOST, MONGO_DB_PORT, "
                       f"MONGO_DB_USER, MONGO_DB_PASSWORD)") from None
    finally:
        client.close()
    return ExperimentTrials(url, exp_key=exp_key, refresh=refresh, max_evals=max_evals)


class VersionMismatch(Exception):
    """The experiment is of another version of hks than this driver or worker: the message says
    which to update."""


def check_version(settings, exp_key, who):
    """VersionMismatch unless the experiment's settings are of this version (who: "driver" or
    "worker")."""
    version = settings.get(VERSION, 1)
    if version > EXPERIMENT_VERSION:
        raise VersionMismatch(
            f"experiment {exp_key!r} is of a newer version of hks (experiment version {version}, "
            f"this {who}'s "
            f"{EXPERIMENT_VERSION}): update this {who} (git pull, or rebuild its image) "
            f"and start it again")
    if version < EXPERIMENT_VERSION and who == "worker":
        raise VersionMismatch(
            f"experiment {exp_key!r} was started by an older version of hks "
            f"(experiment version {version}, this "
            f"worker's {EXPERIMENT_VERSION}): resume it with a driver of this version "
            f"(which updates it), or "
            f"start a new experiment with another --exp-key, or run workers of the driver's "
            f"version")


def store_settings(trials, settings, exp_key):
    """Store the experiment's settings; a resumed experiment keeps the ones it started with (or
    Unusable).

    A driver updates an experiment of an older version to its own, giving the settings that version
    lacks (ADDED_SETTINGS) the values that behave as it does; a newer one it refuses."""
    attachments = trials.attachments
    if SETTINGS in attachments:
        stored = json.loads(attachments[SETTINGS])
        try:
            check_version(stored, exp_key, "driver")
        except VersionMismatch as e:
            raise Unusable(str(e)) from None
        if stored.get(VERSION, 1) < EXPERIMENT_VERSION:
            stored = {**ADDED_SETTINGS, **stored, VERSION: EXPERIMENT_VERSION}
        keys = sorted(k for k in set(stored) | set(settings)
                      if k not in LOCAL_SETTINGS and k != VERSION)
        unknown = [k for k in keys if k not in stored]
        if unknown:
            raise Unusable(f"experiment {exp_key!r} was started by an older version of hks, which "
                           f"had no setting {', '.join(unknown)}: start a new experiment with "
                           f"another --exp-key (or resume it with that version)")
        changed = [f"{k}={stored.get(k)!r} (not {settings.get(k)!r})" for k in keys
                   if stored.get(k) != settings.get(k)]
        if changed:
            raise Unusable(f"experiment {exp_key!r} was started with {', '.join(changed)}: resume "
                           f"it with the same options, or start a new experiment with another "
                           f"--exp-key")
    # the folders may change: workers read the latest
    attachments[SETTINGS] = json.dumps({**settings, VERSION: EXPERIMENT_VERSION}).encode()


def wait_for_settings(trials, exp_key, url, patience_s, poll_s=5):
    """The experiment's settings, once its driver has stored them (a worker may start first),
    through outages of patience_s at most."""
    said = False
    while True:
        try:
            return json.loads(retry_while_unreachable(
                lambda: trials.attachments[SETTINGS], "reading the experiment's settings",
                patience_s))
        except KeyError:  # no driver yet (or it is replacing them right now)
            if not said:
                print(f"Waiting for the driver of experiment {exp_key!r} at {shown(url)} ...",
                      flush=True)
                said = True
            time.sleep(poll_s)


# What the stopping rules read of the other trials on MongoDB (pruning.py): the series they judge by
ACCURACY = "result.history." + METRIC  # the selection metric in a result's history


def recorded_curves(trials, this_tid=None, running=True, pruned=True, reached=1):
    """The validation fine accuracies, epoch by epoch, of the experiment's other trials that ran
    `reached` epochs or more: finished (status ok; pruned=False: not pruned ones) and, with running,
    running ones (their partial result: a trial requeued after its worker died has none). Only that
    series is read, not the rest of each trial."""
    done = {"state": JOB_STATE_DONE, "result.status": "ok"}
    kinds = [done if pruned else {**done, "result.pruned": {"$ne": True}}]
    if running:
        kinds.append({"state": JOB_STATE_RUNNING, "result.status": "running"})
    query = {"exp_key": trials._exp_key, "$or": kinds,
             f"{ACCURACY}.{reached - 1}": {"$exists": True}}
    if this_tid is not None:
        query["tid"] = {"$ne": this_tid}
    docs = trials.handle.jobs.find(query, projection={ACCURACY: 1, "_id": 0})
    return [d["result"]["history"]["val_fine_outputs_accuracy"] for d in docs]


def best_reached(trials, this_tid=None):
    """The best validation fine accuracy any other trial of the experiment reached, finished (status
    ok) or running; None: none yet. Of the finished trials only the best is read: the one of the
    lowest loss (minus its best validation fine accuracy; hyperopt indexes result.loss)."""
    query = {"exp_key": trials._exp_key, "state": JOB_STATE_DONE, "result.status": "ok",
             f"{ACCURACY}.0": {"$exists": True}}
    if this_tid is not None:
        query["tid"] = {"$ne": this_tid}
    best = trials.handle.jobs.find(query, projection={ACCURACY: 1, "_id": 0})
    best = best.sort("result.loss", 1).limit(1)
    curves = [d["result"]["history"]["val_fine_outputs_accuracy"] for d in best]
    running = {"exp_key": trials._exp_key, "state": JOB_STATE_RUNNING, "result.status": "running",
               f"{ACCURACY}.0": {"$exists": True}}
    if this_tid is not None:
        running["tid"] = {"$ne": this_tid}
    curves += [d["result"]["history"]["val_fine_outputs_accuracy"]
               for d in trials.handle.jobs.find(running, projection={ACCURACY: 1, "_id": 0})]
    return max((max(c) for c in curves), default=None)
