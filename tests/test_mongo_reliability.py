"""MongoDB searches through outages, stops, upgrades and odd passwords: nothing lost, nothing
silent.

Fixtures and helpers are in conftest.py (the stand-in, the real scripts as processes).
"""
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from hyperopt.base import JOB_STATE_ERROR, JOB_STATE_NEW

import hyperopt_worker
import lost_workers
import mongo_search
from conftest import (EXP, REAL_MONGO, ROOT, client, driver, output, reserved_trial, results,
                      run_objective, wait_for, worker, write_cifar100_archive)
from mongo_standin import MongoStandin

PASSWORDS = ["Xq7/Zt9", "Xq7@Zt9", "Xq7@Zt9/Kw3"]  # unencoded / or @: the URL is malformed


@pytest.mark.parametrize("script, password", zip(["hyperopt_optimize.py", "hyperopt_worker.py",
                                                  "report.py"],
                                                 PASSWORDS))
def test_a_password_with_a_slash_or_an_at_is_never_printed(tmp_path, script, password):
    """The one line says to percent-encode the password, and shows none of it (driver, worker,
    report)."""
    url = f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs"
    out = subprocess.run([sys.executable, f"{ROOT}/{script}", "--mongo", url, "--exp-key", "x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "Xq7" not in out.stdout + out.stderr and "Zt9" not in out.stdout + out.stderr
    assert "mongo://hks:***@127.0.0.1:27017/hks/jobs" in lines[0]
    assert "percent-encode the password" in lines[
        0] and "urllib.parse.quote('PASSWORD', safe='')" in lines[0]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_percent_encoded_password_is_read_back_and_never_shown(password):
    url = f"mongo://hks:{urllib.parse.quote(password, safe='')}@127.0.0.1:27017/hks/jobs"
    assert mongo_search.password_of(url) == password
    assert mongo_search.shown(url) == "mongo://hks:***@127.0.0.1:27017/hks/jobs"
    for malformed in (f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs",
                      f"mongo://{password}@db:1/hks/jobs"):
        with pytest.raises(mongo_search.Unusable) as e:
            mongo_search.parse_url(malformed)
        assert ("Xq7" not in str(e.value) and "Zt9" not in str(e.value)
                and "percent-encode" in str(e.value))


def test_stops_asked_for_never_fail_a_healthy_trial(mongo_url, jobs):
    """One SIGKILL and any number of SIGTERMs (docker-compose restart) of its workers: the trial
    goes back to the queue each time; only the silent death counts towards MAX_LOST_RUNS."""
    trials = mongo_search.connect(mongo_url, EXP)
    jobs.insert_one({"exp_key": EXP, "tid": 1, "state": JOB_STATE_NEW, "owner": None, "version": 0})
    logged = []
    requeue = lost_workers.RequeueLostTrials(EXP, stale_after=0.3, log=logged.append)
    for stop in ["SIGKILL", *["SIGTERM"] * lost_workers.MAX_LOST_RUNS]:
        job = trials.handle.reserve(["w:1"], exp_key=EXP)
        assert job["tid"] == 1
        if stop == "SIGKILL":  # silent: seen, then stale
            requeue(trials)
            time.sleep(0.4)
        else:  # hyperopt's worker marks the job errored with the Stopped its signal raised
            trials.handle.update(job, {"state": JOB_STATE_ERROR,
                                       "error": ("<class 'lost_workers.Stopped'>", "15")})
        assert requeue(trials) == 1
    doc = jobs.find_one({"tid": 1})
    assert (doc["state"], doc["lost_runs"]) == (JOB_STATE_NEW, 1)
    assert logged == ["Trial 1: no heartbeat from w:1 for 0.3 s: back in the queue (lost run 1).",
                      *["Trial 1: its worker was stopped (SIGTERM): back in the queue."]
                      * lost_workers.MAX_LOST_RUNS]


@pytest.fixture
def standin():
    """The stand-in, which a test can stop (an outage) and start again on its port, with its data.
    """
    if REAL_MONGO:
        pytest.skip("an outage is made by stopping the stand-in")
    with MongoStandin() as server:
        server.url = f"mongo://127.0.0.1:{server.port}/hks_test/jobs"
        yield server


def outage(standin, seconds):
    """MongoDB down now, and back in `seconds` (from a thread); longer than the 5 s a request waits
    for a server (mongo_compat), so that the request fails rather than waits, whichever request sees
    it first."""
    standin.stop()
    threading.Timer(seconds, standin.start).start()


def test_a_trial_that_finishes_during_an_outage_keeps_its_result(
        tmp_path, standin, monkeypatch, capsys):
    """The worker's result store (Heartbeat.keep) and hyperopt's final writes wait for MongoDB: the
    trained result is in MongoDB and in its result file, not thrown away."""
    from hyperopt.base import JOB_STATE_DONE

    with contextlib.closing(client(standin.url)) as c:
        jobs = c["hks_test"]["jobs"]
        ctrl = reserved_trial(standin.url, jobs)
        result = run_objective(ctrl, tmp_path, monkeypatch, train_s=0.5,
                                          # ends in the outage
                                          during_training=lambda: outage(standin, 7))
        assert "MongoDB unreachable while storing the result of trial 1" in capsys.readouterr().out
        assert jobs.find_one({"tid": 1})["result"]["model_name"] == result["model_name"]
        assert [r["trial_id"] for r in results(tmp_path).values()] == [1]
        outage(standin, 7)  # and as hyperopt stores the result and the state after the trial
        ctrl.checkpoint(result)
        ctrl.trials.handle.update(ctrl.current_trial, {"state": JOB_STATE_DONE})
        doc = jobs.find_one({"tid": 1})
    assert (doc["state"], doc["result"]["status"]) == (JOB_STATE_DONE, "ok")
    assert "MongoDB is back after" in capsys.readouterr().out


@pytest.mark.slow
def test_the_driver_waits_through_an_outage_and_stops_past_stale_after(standin, processes):
    search = driver(processes, "driver", standin.url, "--max-evals", "1", "--stale-after", "10")
    wait_for(lambda: "more will be queued" in output(search), 300, "driver started", search)
    time.sleep(2)  # the trial queued: the driver polls MongoDB
    outage(standin, 7)  # longer than a request waits for a server: the driver sees it
    wait_for(lambda: "MongoDB is back after" in output(search), 60, "driver going on", search)
    standin.stop()  # for good
    assert search.wait(120) == 1
    out = output(search)
    assert ("MongoDB unreachable while queueing and watching trials" in out
            and "Traceback" not in out)
    assert out.strip().splitlines()[
        -1].startswith("error: MongoDB unreachable for 10 s (--stale-after) while ")


@pytest.mark.slow
def test_an_idle_worker_waits_through_an_outage_and_exits_non_zero_past_stale_after(
        tmp_path, standin, processes):
    write_cifar100_archive(tmp_path / "ml_req")
    trials = mongo_search.connect(standin.url, EXP)
    mongo_search.store_settings(trials, {"dataset": "cifar100", "data_dir": "ml_req",
                                         "validation": "split", "train_subset": None, "epochs": 1,
                                         "stale_after": 10}, EXP)
    idle = worker(processes, "worker", standin.url)
    wait_for(lambda: "taking trials" in output(idle), 300, "worker started", idle)
    time.sleep(8)  # its trial's process started, and polls for a trial
    outage(standin, 7)
    wait_for(lambda: "MongoDB is back after" in output(idle), 60, "worker going on", idle)
    standin.stop()  # for good: a supervisor must see the worker fail, to restart it
    assert idle.wait(120) == hyperopt_worker.WORKER_MUST_STOP
    out = output(idle)
    assert "MongoDB unreachable while waiting for a trial" in out and "Traceback" not in out
    assert out.strip().splitlines()[
        -1].startswith("error: MongoDB unreachable for 10 s (--stale-after) while ")


def old_settings():
    """The settings as version 1 stores them: no version, and none of the settings version 2
    adds."""
    from hyperopt_optimize import parse_args
    from settings import Settings

    settings = Settings.from_args(parse_args(["--epochs", "1"])).as_dict()
    return {k: v for k, v in settings.items() if k not in mongo_search.ADDED_SETTINGS}


def test_an_experiment_of_an_older_version_resumes_and_a_newer_one_is_refused(mongo_url):
    from hyperopt_optimize import parse_args
    from settings import DEFAULTS, Settings

    assert all(getattr(DEFAULTS, k) == v for k, v in mongo_search.ADDED_SETTINGS.items())
    trials = mongo_search.connect(mongo_url, EXP)
    trials.attachments[mongo_search.SETTINGS] = json.dumps(old_settings()).encode()
    settings = Settings.from_args(parse_args(["--epochs", "1"])).as_dict()
    # the settings it lacks get the values that behave as its version does
    mongo_search.store_settings(trials, settings, EXP)
    assert (json.loads(trials.attachments[mongo_search.SETTINGS])
            == {**settings, mongo_search.VERSION: 2})

    trials.attachments[mongo_search.SETTINGS] = json.dumps({**old_settings(), "seed": 1}).encode()
    with pytest.raises(mongo_search.Unusable) as e:  # a setting it had, changed
        mongo_search.store_settings(trials, settings, EXP)
    assert f"error: {e.value}" == (
        f"error: experiment {EXP!r} was started with seed=1 (not 0): resume it with the same "
        f"options, or start a new experiment with another --exp-key")
    # a setting it does not have, which its version cannot do
    with pytest.raises(mongo_search.Unusable) as e:
        mongo_search.store_settings(trials, {**settings, "seed": 1, "mixup": 0.2}, EXP)
    assert f"error: {e.value}" == (
        f"error: experiment {EXP!r} was started by an older version of hks, which had no "
        f"setting mixup: start a new experiment with another --exp-key (or resume it with that "
        f"version)")
    newer = {**settings, mongo_search.VERSION: 3}
    trials.attachments[mongo_search.SETTINGS] = json.dumps(newer).encode()
    with pytest.raises(mongo_search.Unusable) as e:
        mongo_search.store_settings(trials, settings, EXP)
    assert f"error: {e.value}" == (
        f"error: experiment {EXP!r} is of a newer version of hks (experiment version 3, this "
        f"driver's 2): update this driver (git pull, or rebuild its image) and start it again")
    assert json.loads(trials.attachments[mongo_search.SETTINGS]) == newer  # untouched


@pytest.mark.parametrize("version", [1, 3])
def test_a_worker_of_another_version_than_its_experiment_says_which_to_update(
        tmp_path, mongo_url, jobs,
                                                                               processes, version):
    trials = mongo_search.connect(mongo_url, EXP)
    settings = {**old_settings(), **({mongo_search.VERSION: version} if version > 1 else {})}
    trials.attachments[mongo_search.SETTINGS] = json.dumps(settings).encode()
    jobs.insert_one({"exp_key": EXP, "state": JOB_STATE_NEW, "owner": None, "tid": 0, "version": 0})
    other = worker(processes, "worker", mongo_url)
    assert other.wait(120) == 1
    lines = output(other).strip().splitlines()
    assert lines[-1].startswith(f"error: experiment {EXP!r} ") and "Traceback" not in output(other)
    assert ("update this worker" if version == 3
            else "resume it with a driver of this version") in lines[-1]
    assert jobs.find_one({"tid": 0})["state"] == JOB_STATE_NEW


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_experiments_objective_says_so_in_one_line(
        tmp_path, mongo_url, jobs,
                                                                                 processes):
    """The objective was pickled by another version, from a module that this one does not have: the
    trial's process stops the worker with one line, and no trial is taken (none burnt as failed)."""
    write_cifar100_archive(tmp_path / "ml_req")
    trials = mongo_search.connect(mongo_url, EXP)
    mongo_search.store_settings(trials, {**old_settings(), **mongo_search.ADDED_SETTINGS}, EXP)
    # pickle: a moved class
    trials.attachments[mongo_search.DOMAIN] = b"c" b"old_hks_objective\nObjective\n."
    jobs.insert_one({"exp_key": EXP, "state": JOB_STATE_NEW, "owner": None, "tid": 0, "version": 0,
                     "misc": {"cmd": ("domain_attachment", mongo_search.DOMAIN), "tid": 0,
                              "idxs": {}, "vals": {}}})
    stuck = worker(processes, "worker", mongo_url)
    assert stuck.wait(300) == hyperopt_worker.WORKER_MUST_STOP
    out = output(stuck)
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1] == (
        f"error: this worker cannot load the objective of experiment {EXP!r} (ModuleNotFoundError: "
        "No module named "
        "'old_hks_objective'): it was queued by another version of hks: restart the experiment's "
        "driver with "
        "this version (it stores the objective anew), or run this worker from the driver's "
        "version")
    assert jobs.find_one({"tid": 0})["state"] == JOB_STATE_NEW
