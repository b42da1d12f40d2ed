"""The search on MongoDB: the real driver and real worker processes, end to end.

They run on the stand-in (tests/mongo_standin.py), or on a real MongoDB with
HKS_TEST_MONGO_URL=mongo://[USER:PASSWORD@]HOST:PORT (each test uses a new database, dropped after);
the fixtures and helpers are in tests/conftest.py.
"""
import contextlib
import glob
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pymongo
import pytest
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING

import mongo_compat
import lost_workers
import mongo_search
from conftest import (EXP, REAL_MONGO, ROOT, check_every_trial_done_once, client, driver, end_epoch,
                      finish,
                      new_jobs, output, reserved_trial, reserved_workers, results, run_objective,
                      stop, wait_for, worker, write_cifar100_archive)
from mongo_standin import MongoStandin

# A dead worker's trial is requeued after this many seconds: a healthy trial beats every
# lost_workers.HEARTBEAT_EVERY_S seconds from reserving to finishing, even on a busy 2-core machine.
STALE_AFTER_S = 15


USER, PASSWORD = "hks", "s3cret-Pw"  # the account of the stand-in that asks for one


@pytest.fixture
def auth_url():
    """A MongoDB that asks for USER and PASSWORD: mongo://USER:PASSWORD@HOST:PORT/DB/jobs."""
    if REAL_MONGO:
        pytest.skip("the stand-in's account: HKS_TEST_MONGO_URL has its own")
    with MongoStandin(users={USER: PASSWORD}) as standin:
        db = f"hks_test_{uuid.uuid4().hex[:8]}"
        yield f"mongo://{USER}:{PASSWORD}@127.0.0.1:{standin.port}/{db}/jobs"


@pytest.mark.slow
def test_driver_and_two_workers_run_four_trials(tmp_path, mongo_url, jobs, processes):
    write_cifar100_archive(tmp_path / "ml_req")
    # The workers start first, and their own budget variables must change nothing: trials use the
    # driver's.
    workers = [worker(processes, f"worker{i}", mongo_url, HKS_EPOCHS="5",
                      HKS_TRAIN_SUBSET="10") for i in (1, 2)]
    wait_for(lambda: all("Waiting for the driver" in output(w) for w in workers), 120,
             "waiting workers", *workers)

    # The shortest --stale-after: healthy trials (process start, data loading, test scoring) are not
    # requeued.
    out = finish(driver(processes, "driver", mongo_url, "--max-evals", "4",
                        "--stale-after", str(lost_workers.MIN_STALE_AFTER_S)))

    assert "Found 0 trials of the experiment; 4 more will be queued." in out
    assert "lost run" not in out
    docs, files = check_every_trial_done_once(jobs, tmp_path, 4)
    for r in files.values():
        assert (r["epochs_budget"], r["epochs_run"], r["train_size"]) == (1, 1, 60)
    assert all(output(w).count("Hyperspace:") >= 1 for w in workers)  # both workers trained
    assert sum(output(w).count("Hyperspace:") for w in workers) == 4
    best = max(files.values(), key=lambda r: r["fine_best_accuracy"])
    assert (f"Best of 4 trials: {best['model_name']}: val fine accuracy "
            f"{best['fine_best_accuracy']:.4f}") in out
    # the results are in MongoDB too
    stored = {d["result"]["model_name"]: d["result"] for d in docs}
    assert all(stored[r["model_name"]]["fine_best_accuracy"] == r["fine_best_accuracy"]
               for r in files.values())


@pytest.mark.slow
def test_asha_search_on_two_workers_runs_end_to_end(tmp_path, mongo_url, jobs, processes):
    write_cifar100_archive(tmp_path / "ml_req")
    workers = [worker(processes, f"worker{i}", mongo_url) for i in (1, 2)]
    out = finish(driver(processes, "driver", mongo_url, "--max-evals", "4", "--epochs", "2",
                        "--prune", "asha",
                        # one rung, at epoch 1: the top half of the trials there go on
                        "--prune-eta", "2"))

    docs, files = check_every_trial_done_once(jobs, tmp_path, 4)
    assert all(output(w).count("Hyperspace:") >= 1 for w in workers)
    first_epoch = {r["trial_id"]: r["history"]["val_fine_outputs_accuracy"][0]
                   for r in files.values()}
    for r in files.values():
        assert (r["epochs_budget"], r["epochs_run"]) == (2, 1 if r["pruned"] else 2)
        if r["pruned"]:  # stopped at the rung: some other trial was ahead there
            assert r["pruned_at_epoch"] == 1 and r["loss"] == -first_epoch[r["trial_id"]]
            assert any(a > first_epoch[r["trial_id"]] for tid, a in first_epoch.items()
                       if tid != r["trial_id"])
    done = [line for line in out.splitlines() if line.startswith("Trial ") and " done (" in line]
    assert len(done) == 4 and sum(r["pruned"]
                                  for r in files.values()) == sum("(pruned at epoch 1)" in line
                                                                               for line in done)


@pytest.mark.slow
def test_lost_and_stopped_workers_trials_are_requeued_and_finished(
        tmp_path, mongo_url, jobs, processes):
    # Trials long enough (2 epochs on 450 images) to be signalled while they train, even on a busy
    # machine.
    write_cifar100_archive(tmp_path / "ml_req", train_per_class=5)
    first = worker(processes, "worker1", mongo_url)
    search = driver(processes, "driver", mongo_url, "--max-evals", "2", "--epochs", "2",
                    "--train-subset", "450", "--stale-after", str(STALE_AFTER_S))

    # its first heartbeat (training started) took its version past 0
    def running_trial(other_than=None):
        return jobs.find_one({"exp_key": EXP, "state": JOB_STATE_RUNNING, "version": {"$gte": 1},
                              "tid": {"$ne": other_than}})

    killed = wait_for(running_trial, 300, "trial in training", first, search)
    stop(first, signal.SIGKILL)  # the machine is gone: no chance to say anything

    second = worker(processes, "worker2", mongo_url)
    stopped = wait_for(lambda: running_trial(other_than=killed["tid"]), 300,
                       "second trial in training", second, search)
    # as docker stop does: the worker stops, its trial goes back to the queue
    second.send_signal(signal.SIGTERM)
    second.wait(60)

    worker(processes, "worker3", mongo_url)
    out = finish(search)

    assert (f"Trial {killed['tid']}: no heartbeat from {killed['owner'][0]} for {STALE_AFTER_S} s: "
            "back in the queue (lost run 1).") in out
    assert f"Trial {stopped['tid']}: its worker was stopped (SIGTERM): back in the queue." in out
    docs, files = check_every_trial_done_once(jobs, tmp_path, 2)
    # a stop is no loss
    assert {d["tid"]: d["lost_runs"] for d in docs} == {killed["tid"]: 1, stopped["tid"]: 0}
    assert all(r["epochs_run"] == 2 for r in files.values())


@pytest.mark.slow
def test_restarted_driver_resumes_the_experiment(tmp_path, mongo_url, jobs, processes):
    write_cifar100_archive(tmp_path / "ml_req")
    worker(processes, "worker", mongo_url)
    first = driver(processes, "driver1", mongo_url, "--max-evals", "3")
    wait_for(lambda: jobs.find_one({"exp_key": EXP, "state": JOB_STATE_RUNNING,
                                    "version": {"$gte": 1}})
             and jobs.count_documents({"exp_key": EXP}) == 2, 300,
             "trial in training and one queued", first)
    # mid-search: trial 1 in training, trial 2 queued (one worker: no trial 3 yet)
    stop(first, signal.SIGKILL)
    before = {d["tid"]: d["misc"]["vals"] for d in jobs.find({"exp_key": EXP})}
    assert len(before) == 2

    out = finish(driver(processes, "driver2", mongo_url, "--max-evals", "3"))

    assert (f"Found {len(before)} trials of the experiment; {3 - len(before)} more will be "
            "queued.") in out
    docs, _ = check_every_trial_done_once(jobs, tmp_path, 3)
    assert {d["tid"]: d["misc"]["vals"] for d in docs if d["tid"] in before} == before
    vals = [json.dumps(d["misc"]["vals"], sort_keys=True) for d in docs]
    # the resumed driver proposes new points, not the first driver's again
    assert len(set(vals)) == 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("script", ["hyperopt_optimize.py", "hyperopt_worker.py"])
def test_unreachable_mongodb_is_one_line_naming_the_url(tmp_path, script):
    url = f"mongo://127.0.0.1:{free_port()}/hks/jobs"
    out = subprocess.run([sys.executable, os.path.join(ROOT, script), "--mongo", url], cwd=tmp_path,
                         # the timeout only guards against a hang
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[
        0].startswith(f"error: cannot use MongoDB at {url}: ") and "Connection refused" in lines[0]


@pytest.mark.parametrize("url", ["mongo://localhost/hks/jobs", "mongodb://localhost:27017/hks/jobs",
                                 "mongo://localhost:27017/hks/trials"])
def test_malformed_url_is_one_line(tmp_path, url):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "hyperopt_worker.py"), "--mongo", url],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"error: --mongo must look like {mongo_search.URL_FORM}, not "
                                  f"{url!r}")


def test_a_resumed_experiment_keeps_its_settings(tmp_path, mongo_url):
    from hyperopt_optimize import parse_args
    from settings import Settings

    trials = mongo_search.connect(mongo_url, EXP)
    # folders may differ
    started = Settings.from_args(parse_args(["--epochs", "100", "--data-dir", "elsewhere"]))
    started = started.as_dict()
    mongo_search.store_settings(trials, started, EXP)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), "--mongo",
                          mongo_url, "--exp-key", EXP, "--epochs", "1", "--max-evals", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"error: experiment {EXP!r} was started with epochs=100 (not 1): resume it "
                                  "with the same options, or start a new experiment with another "
                                  "--exp-key")
    # untouched
    assert json.loads(
        trials.attachments[mongo_search.SETTINGS]) == {**started, mongo_search.VERSION: 2}


def test_worker_without_the_dataset_takes_no_trial(tmp_path, mongo_url, jobs, processes):
    trials = mongo_search.connect(mongo_url, EXP)
    mongo_search.store_settings(trials, {"dataset": "cifar100", "data_dir": "ml_req",
                                                 "validation": "split",
                                                 "train_subset": None, "epochs": 1}, EXP)
    jobs.insert_one({"exp_key": EXP, "state": JOB_STATE_NEW, "owner": None, "tid": 0, "version": 0})
    lonely = worker(processes, "worker", mongo_url)
    assert lonely.wait(120) == 1
    assert output(lonely).strip().endswith(f"(this worker's folder: {tmp_path})")
    assert "cifar-100-python.tar.gz" in output(lonely)
    assert jobs.find_one({"tid": 0})["state"] == JOB_STATE_NEW


def test_requeue_lost_trials_only_when_silent(mongo_url, jobs):
    """The driver's side of dead-worker recovery, step by step, and a requeued trial's old worker
    shut out."""
    from hyperopt.mongoexp import MongoCtrl
    from lost_workers import Heartbeat, TrialLost

    trials = mongo_search.connect(mongo_url, EXP)
    jobs.insert_many([{"exp_key": EXP, "tid": 1, "state": JOB_STATE_NEW, "owner": None,
                       "version": 0},
                      {"exp_key": EXP, "tid": 2, "state": JOB_STATE_ERROR, "owner": ["w:2"],
                       "version": 3,
                       "error": ["<class 'ModuleNotFoundError'>", "No module named 'x'"]}])
    job = trials.handle.reserve(["w:1"], exp_key=EXP)
    assert job["tid"] == 1
    logged = []
    requeue = lost_workers.RequeueLostTrials(EXP, stale_after=0.5, log=logged.append)

    assert requeue(trials) == 1  # the errored job at once; the running one is only seen for now
    assert logged == [
        "Trial 2: its worker failed to run it (ModuleNotFoundError: No module named 'x'): back in "
        "the "
                      "queue (lost run 1)."]
    time.sleep(0.3)
    Heartbeat(MongoCtrl(trials, job, read_only=False)).beat()  # alive: new version
    time.sleep(0.3)
    assert requeue(trials) == 0  # 0.3 s since the heartbeat
    time.sleep(0.6)
    assert requeue(trials) == 1
    assert logged[-1] == "Trial 1: no heartbeat from w:1 for 0.5 s: back in the queue (lost run 1)."
    doc = jobs.find_one({"tid": 1})
    assert (doc["state"], doc["owner"], doc["lost_runs"],
            doc["version"]) == (JOB_STATE_NEW, None, 1, 3)
    # The old worker, had it been only slow: its next heartbeat stops the trial, and what hyperopt's
    # worker then does (MongoWorker.run_one: checkpoint, mark the job errored) writes nothing.
    ctrl = MongoCtrl(trials, job, read_only=False)
    with pytest.raises(TrialLost, match="trial 1 was requeued by the driver"):
        Heartbeat(ctrl).beat()
    ctrl.checkpoint()
    trials.handle.update(job, {"state": JOB_STATE_ERROR, "error": ["TrialLost", "..."]})
    assert jobs.find_one({"tid": 1}) == doc

    for _ in (2, 3):  # lost runs 2 and 3: failed, and done with
        assert trials.handle.reserve(["w:3"], exp_key=EXP)["tid"] in (1, 2)
        assert trials.handle.reserve(["w:4"], exp_key=EXP)["tid"] in (1, 2)
        requeue(trials)
        time.sleep(0.6)
        assert requeue(trials) == 2
    assert logged[-1].startswith("Trial ") and logged[-1].endswith(
        "marked failed: lost its worker 3 times, last: no heartbeat from w:4 for 0.5 s "
        "(killed, out of memory?).")
    for doc in jobs.find({"exp_key": EXP}):
        assert (doc["state"], doc["result"]["status"],
                doc["lost_runs"]) == (JOB_STATE_DONE, "fail", 3)
        assert "error" not in doc


def test_compat_layer_gives_hyperopt_the_pymongo_3_calls_it_makes(mongo_url):
    mongo_compat.install()
    from hyperopt.mongoexp import MongoJobs, MongoTrials

    trials = MongoTrials(mongo_url, exp_key=EXP)
    handle = trials.handle
    # find_and_modify: None after an upsert (as pymongo 3), so a retry
    assert trials.new_trial_ids(2) == [2, 3]
    # insert
    job = handle.insert({"exp_key": EXP, "tid": 7, "state": JOB_STATE_NEW, "owner": None,
                         "version": 0})
    assert "_id" in job and len(handle) == 1  # Collection.count
    assert trials.count_by_state_unsynced(JOB_STATE_NEW) == 1  # Cursor.count
    assert trials.count_by_state_unsynced([JOB_STATE_RUNNING, JOB_STATE_DONE]) == 0
    reserved = handle.reserve("me", exp_key=EXP)  # find_and_modify with new=True
    assert (reserved["state"], reserved["owner"]) == (JOB_STATE_RUNNING, "me")
    handle.update(reserved, {"result": {"status": "ok", "loss": 1.0}})  # Collection.update
    assert handle.jobs.find_one({"tid": 7})["version"] == 1
    trials.attachments["blob"] = b"x" * 300_000  # GridFS, several chunks
    assert trials.attachments["blob"] == b"x" * 300_000
    handle.delete(reserved)  # Collection.remove
    assert len(handle) == 0
    assert isinstance(MongoJobs.new_from_connection_str(mongo_url).conn, pymongo.MongoClient)


def test_compat_layer_authenticates_with_the_user_of_the_url(monkeypatch):
    mongo_compat.install()
    from hyperopt import mongoexp

    monkeypatch.setenv("MONGO_DB_HOST", "db.example")
    monkeypatch.setenv("MONGO_DB_USER", "hks")
    monkeypatch.setenv("MONGO_DB_PASSWORD", "p@ss/w:rd")  # a URL carries it percent-encoded
    url = mongo_search.url_from_env()
    assert url == "mongo://hks:p%40ss%2Fw%3Ard@db.example:27017/hyperopt/jobs"
    assert mongo_search.shown(url) == "mongo://hks:***@db.example:27017/hyperopt/jobs"
    clients = []
    monkeypatch.setattr(pymongo, "MongoClient", lambda *args,
                        **kwargs: clients.append((args, kwargs)) or
                        {"hyperopt": {"jobs": "the jobs collection"}})
    assert mongoexp.connection_from_string(url)[3] == "the jobs collection"
    (args, kwargs), = clients
    assert args == ("db.example", 27017)
    assert (kwargs["username"], kwargs["password"],
            "authSource" in kwargs) == ("hks", "p@ss/w:rd", False)


def test_hyperopt_still_needs_the_compat_layer(mongo_url):
    """hyperopt 0.3.0 calls pymongo 3 methods: when this fails, hyperopt was fixed and
    mongo_compat.py can go."""
    code = ("import sys; from hyperopt.mongoexp import MongoTrials; "
            "MongoTrials(sys.argv[1], exp_key='x').count_by_state_unsynced(0)")
    out = subprocess.run([sys.executable, "-c", code, mongo_url], capture_output=True, text=True,
                         timeout=120)
    assert (out.returncode == 1
            and "AttributeError: 'Cursor' object has no attribute 'count'" in out.stderr)


def test_pruning_on_a_worker_reads_what_every_worker_finished(mongo_url, jobs):
    """A worker's ctrl.trials is a MongoTrials of the experiment: the median stopping rule sees the
    trials other workers finished (after a refresh), and only the finished, successful ones."""
    from hyperopt.mongoexp import MongoTrials

    from pruning import best_by_epoch

    mongo_compat.install()
    finished = [[0.1, 0.3], [0.2, 0.5], [0.4]]
    jobs.insert_many([{"exp_key": EXP, "tid": tid, "state": JOB_STATE_DONE, "version": 1,
                       "owner": None,
                       "misc": {"tid": tid, "idxs": {}, "vals": {}, "cmd": None}, "spec": None,
                       "result": {"status": "ok", "loss": -max(acc),
                                  "history": {"val_fine_outputs_accuracy": acc}}}
                      for tid, acc in enumerate(finished)])
    jobs.insert_one({"exp_key": EXP, "tid": 3, "state": JOB_STATE_RUNNING, "version": 1,
                     "owner": ["w:1"],
                     "misc": {"tid": 3, "idxs": {}, "vals": {}, "cmd": None}, "spec": None,
                     "result": {"status": "new"}})
    # as hyperopt's worker builds it
    worker_view = MongoTrials(mongo_url, exp_key=EXP, refresh=False)
    assert sorted(best_by_epoch(worker_view, 1)) == [0.1, 0.2, 0.4]
    assert sorted(best_by_epoch(worker_view, 2)) == [0.3, 0.5]


def test_asha_on_a_worker_stops_a_trial_behind_another_workers_trial_in_flight(mongo_url, jobs):
    """Two workers, each with its own view of the experiment (as hyperopt's workers build them) and
    a trial reserved: the first publishes its accuracy at rung 1 with its heartbeat; the second,
    behind it at that rung, stops there. Their callbacks are those of objective.py, fed epochs as
    Keras would."""
    from hyperopt.mongoexp import MongoTrials

    from pruning import METRIC
    from record import best_result

    mongo_compat.install()
    new_jobs(jobs, EXP, (0, 1))
    settings = {"prune": "asha", "epochs": 4, "prune_eta": 2, "prune_min_epochs": 1}  # rungs 1, 2
    first, second = reserved_workers(mongo_url, EXP, settings)
    assert end_epoch(first, 0, 0.6) is False  # the first at rung 1: goes on
    doc = jobs.find_one({"tid": first[0].current_trial["tid"]})
    assert (doc["state"], doc["result"]) == (JOB_STATE_RUNNING,
                                             {"status": "running", "history": {METRIC: [0.6]}})
    # a heartbeat without a partial result stamps the job and keeps its result
    first[0].checkpoint()
    assert jobs.find_one({"_id": doc["_id"]})["result"] == doc["result"]
    driver_view = MongoTrials(mongo_url, exp_key=EXP)
    assert best_result(driver_view) is None and all("loss" not in t["result"]
                                                    for t in driver_view.trials)

    # 0.3 against the other worker's 0.6 in flight: top 1 of 2 goes on
    assert end_epoch(second, 0, 0.3) is True
    rule = second[1][0]
    assert rule.pruned_at_epoch == 1
    assert end_epoch(first, 1, 0.7) is False  # alone at rung 2
    assert jobs.find_one({"_id": doc["_id"]})["result"]["history"][METRIC] == [0.6, 0.7]


def test_wrong_password_is_one_line_with_its_own_advice(auth_url):
    wrong = auth_url.replace(f":{PASSWORD}@", ":wrong@")
    with pytest.raises(mongo_search.Unusable) as e:
        mongo_search.connect(wrong, EXP)
    assert f"error: {e.value}" == (
        f"error: cannot use MongoDB at {mongo_search.shown(wrong)}: authentication failed for "
        f"user {USER!r}: check MONGO_DB_USER and MONGO_DB_PASSWORD (or USER:PASSWORD in --mongo)")


def test_a_url_without_its_password_takes_it_from_the_environment(auth_url, monkeypatch):
    """The worker command that the driver prints: mongo://USER@..., the password in
    MONGO_DB_PASSWORD."""
    url = auth_url.replace(f":{PASSWORD}@", "@")
    monkeypatch.delenv("MONGO_DB_PASSWORD", raising=False)
    with pytest.raises(mongo_search.Unusable) as e:
        mongo_search.connect(url, EXP)
    assert f"error: {e.value}" == (
        f"error: --mongo {url} names user {USER!r} but no password: set MONGO_DB_PASSWORD "
        f"(or give mongo://USER:PASSWORD@...)")
    monkeypatch.setenv("MONGO_DB_PASSWORD", PASSWORD)
    # and hyperopt's own connections, as workers make them
    trials = mongo_search.connect(url, EXP)
    assert trials.count_by_state_unsynced(JOB_STATE_NEW) == 0


def test_the_worker_command_the_driver_prints_works_as_pasted(auth_url, monkeypatch):
    from hyperopt_worker import parse_args

    command = mongo_search.worker_command(auth_url, "my exp")
    assert command == (
        f"python3 hyperopt_worker.py --mongo {auth_url.replace(f':{PASSWORD}@', '@')} --exp-key "
                       f"'my exp'   # the password of {USER}: MONGO_DB_PASSWORD in the worker's "
                       "environment")
    args, _ = parse_args(shlex.split(command, comments=True)[2:])  # what a shell passes it
    monkeypatch.setenv("MONGO_DB_PASSWORD", PASSWORD)
    mongo_search.connect(args.mongo, args.exp_key)
    assert mongo_search.worker_command("mongo://db.example:27017/hks/jobs", EXP) == \
        f"python3 hyperopt_worker.py --mongo mongo://db.example:27017/hks/jobs --exp-key {EXP}"


def command_lines(group):
    """{pid: command line} of the processes in a process group, as ps shows them."""
    lines = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            with open(stat) as f:
                # after "pid (name)": state, ppid, pgrp, ...
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                with open(stat[:-len("stat")] + "cmdline", "rb") as f:
                    lines[
                        int(stat.split("/")[2])] = f.read().replace(
                            b"\0", b" ").decode(errors="replace")
    return lines


@pytest.mark.slow
def test_the_password_shows_in_no_command_line(tmp_path, auth_url, processes):
    """Given in MONGO_DB_PASSWORD only, the password is in no process's command line: the driver's,
    the worker's, nor that of the worker's per-trial process (which hyperopt starts with the URL in
    its argv)."""
    write_cifar100_archive(tmp_path / "ml_req")
    m = mongo_search.parse_url(auth_url)
    env = {"MONGO_DB_HOST": m["host"], "MONGO_DB_PORT": m["port"], "MONGO_DB_NAME": m["db"],
           "MONGO_DB_USER": USER, "MONGO_DB_PASSWORD": PASSWORD, "EXPERIMENT_NAME": EXP}
    search = processes("driver", "hyperopt_optimize.py", "--epochs", "1", "--train-subset", "60",
                       "--max-evals", "1", **env)
    work = processes("worker", "hyperopt_worker.py", "--poll-interval", "1", **env)
    with contextlib.closing(client(auth_url)) as c:
        jobs = c[m["db"]]["jobs"]
        wait_for(lambda: jobs.find_one({"exp_key": EXP, "state": JOB_STATE_RUNNING,
                                        "version": {"$gte": 1}}), 300,
                 "trial in training", work, search)
        lines = {**command_lines(search.pid), **command_lines(work.pid)}
        # the trial's process, running
        assert any("--max-jobs=1" in line for line in lines.values()), lines
        assert [line for line in lines.values() if PASSWORD in line] == []
        out = finish(search)
        assert mongo_search.worker_command(auth_url, EXP) in out
        check_every_trial_done_once(jobs, tmp_path, 1)


def test_a_trial_beats_from_start_to_end_not_only_at_epochs(tmp_path, mongo_url, jobs, monkeypatch):
    """A trial is silent for no more than a heartbeat interval, also while it loads data, builds its
    model or scores the test set: a driver with a stale-after of a few intervals never requeues
    it."""
    import trial  # noqa: F401 -- Keras loads (seconds) before the driver below starts watching

    monkeypatch.setattr(lost_workers, "HEARTBEAT_EVERY_S", 0.1, raising=False)
    ctrl = reserved_trial(mongo_url, jobs)
    requeue = lost_workers.RequeueLostTrials(EXP, stale_after=0.5)
    requeued, done = [], threading.Event()

    def driver():
        while not done.wait(0.1):
            requeued.append(requeue(ctrl.trials))

    watching = threading.Thread(target=driver)
    watching.start()
    try:
        result = run_objective(ctrl, tmp_path, monkeypatch, train_s=2)
    finally:
        done.set()
        watching.join()
    assert len(requeued) > 10 and sum(requeued) == 0
    assert (result["status"], result["trial_id"]) == ("ok", 1)
    assert [r["trial_id"] for r in results(tmp_path).values()] == [1]
    doc = jobs.find_one({"tid": 1})
    # hyperopt ends it
    assert (doc["state"], doc["owner"], doc["result"]["model_name"]) == (
        JOB_STATE_RUNNING, ["w:1"], result["model_name"])


@pytest.mark.parametrize("lost_runs", [0, lost_workers.MAX_LOST_RUNS - 1])
def test_a_trial_taken_away_writes_no_result_file(tmp_path, mongo_url, jobs, monkeypatch,
                                                  lost_runs):
    """The driver requeues (or, after MAX_LOST_RUNS, fails) a trial while its old worker still
    trains it (the heartbeats did not get through): that worker writes no result file, so no file
    says ok for a trial that MongoDB calls failed, or runs again."""
    from lost_workers import TrialLost

    # no beat after the first
    monkeypatch.setattr(lost_workers, "HEARTBEAT_EVERY_S", 600, raising=False)
    ctrl = reserved_trial(mongo_url, jobs)
    jobs.update_one({"tid": 1}, {"$set": {"lost_runs": lost_runs}})
    requeue = lost_workers.RequeueLostTrials(EXP, stale_after=0.5)

    def taken_away():
        time.sleep(0.2)  # the first heartbeat
        requeue.requeue(jobs, jobs.find_one({"tid": 1}), "no heartbeat")

    with pytest.raises(TrialLost, match="trial 1 was requeued by the driver"):
        run_objective(ctrl, tmp_path, monkeypatch, train_s=0.5, during_training=taken_away)
    assert results(tmp_path) == {}
    doc = jobs.find_one({"tid": 1})
    assert doc["state"] == (JOB_STATE_NEW if lost_runs == 0 else JOB_STATE_DONE)
    # no ok result of the old run
    assert doc["result"]["status"] == ("new" if lost_runs == 0 else "fail")


@pytest.mark.parametrize("value", ["2", "9.5"])
def test_a_stale_after_that_would_requeue_healthy_trials_is_refused(value, capsys, monkeypatch):
    from hyperopt_optimize import parse_args

    assert parse_args(["--stale-after", "10"]).stale_after == 10
    for argv in (["--stale-after", value], []):
        monkeypatch.setenv("HKS_STALE_AFTER", value)
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert capsys.readouterr().err.splitlines()[-1].split(": ", 1)[1] == (
            f"error: argument --stale-after: {value} s would requeue healthy trials: a running "
            f"trial beats every 2 s, give it at least 10 s (default 600)")


def test_a_stop_signal_swallowed_by_a_gc_callback_still_stops_the_trial(mongo_url, jobs):
    """hyperopt's handler raises Stopped where the signal lands; inside a gc callback (keras'
    clear_session collects, and jax registers one) Python prints the exception and drops it: the
    next heartbeat raises it."""
    from lost_workers import Heartbeat, Stopped

    ctrl = reserved_trial(mongo_url, jobs)
    handlers = {sig: signal.getsignal(sig)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        Stopped(signal.SIGTERM)  # raised where Python could only print it
        with pytest.raises(Stopped):
            Heartbeat(ctrl).beat()
    finally:
        Stopped.received = None
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@pytest.mark.slow
def test_two_drivers_of_one_experiment_queue_max_evals_trials_in_all(mongo_url, jobs, processes):
    """--max-evals is the experiment's total, whatever the number of its drivers. The trials are
    done by the test itself, at once and as failed ones (the drivers are under test, not
    training)."""
    drivers = [driver(processes, f"driver{i}", mongo_url, "--max-evals", "3") for i in (1, 2)]
    wait_for(lambda: all("more will be queued" in output(d) for d in drivers), 300,
             "drivers started", *drivers)
    deadline = time.monotonic() + 300
    while any(d.poll() is None for d in drivers) and time.monotonic() < deadline:
        job = jobs.find_one_and_update({"exp_key": EXP, "state": JOB_STATE_NEW, "owner": None},
                                       {"$set": {"state": JOB_STATE_RUNNING, "owner": ["test:1"]}})
        if job:
            done = {"status": "fail", "error": "done by the test"}
            jobs.update_one({"_id": job["_id"]},
                            {"$set": {"state": JOB_STATE_DONE, "version": 1, "result": done}})
        time.sleep(0.2)
    outs = [finish(d, timeout_s=1) for d in drivers]
    assert jobs.count_documents({"exp_key": EXP}) == 3
    assert jobs.count_documents({"exp_key": EXP, "state": JOB_STATE_DONE}) == 3
    assert any("queues no more" in out for out in outs), outs
