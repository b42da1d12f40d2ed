"""MongoDB searches through outages, stops, upgrades and odd passwords: nothing lost, nothing silent.

Fixtures and helpers are those of test_mongo.py (the stand-in, the real scripts as processes).
"""
import subprocess
import sys
import time
import urllib.parse

import pytest
from hyperopt.base import JOB_STATE_ERROR, JOB_STATE_NEW

import lost_workers
import mongo_search
from conftest import ROOT
import test_mongo
from test_mongo import EXP

mongo_url, jobs = test_mongo.mongo_url, test_mongo.jobs  # the fixtures

PASSWORDS = ["Xq7/Zt9", "Xq7@Zt9", "Xq7@Zt9/Kw3"]  # unencoded / or @: the URL is malformed


@pytest.mark.parametrize("script, password", zip(["hyperopt_optimize.py", "hyperopt_worker.py", "report.py"],
                                                 PASSWORDS))
def test_a_password_with_a_slash_or_an_at_is_never_printed(tmp_path, script, password):
    """The one line says to percent-encode the password, and shows none of it (driver, worker, report)."""
    url = f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs"
    out = subprocess.run([sys.executable, f"{ROOT}/{script}", "--mongo", url, "--exp-key", "x"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "Xq7" not in out.stdout + out.stderr and "Zt9" not in out.stdout + out.stderr
    assert "mongo://hks:***@127.0.0.1:27017/hks/jobs" in lines[0]
    assert "percent-encode the password" in lines[0] and "urllib.parse.quote('PASSWORD', safe='')" in lines[0]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_percent_encoded_password_is_read_back_and_never_shown(password):
    url = f"mongo://hks:{urllib.parse.quote(password, safe='')}@127.0.0.1:27017/hks/jobs"
    assert mongo_search.password_of(url) == password
    assert mongo_search.shown(url) == "mongo://hks:***@127.0.0.1:27017/hks/jobs"
    for malformed in (f"mongo://hks:{password}@127.0.0.1:27017/hks/jobs", f"mongo://{password}@db:1/hks/jobs"):
        with pytest.raises(SystemExit) as e:
            mongo_search.parse_url_or_exit(malformed)
        assert "Xq7" not in e.value.code and "Zt9" not in e.value.code and "percent-encode" in e.value.code


def test_stops_asked_for_never_fail_a_healthy_trial(mongo_url, jobs):
    """One SIGKILL and any number of SIGTERMs (docker-compose restart) of its workers: the trial goes back to
    the queue each time; only the silent death counts towards MAX_LOST_RUNS."""
    trials = mongo_search.connect_or_exit(mongo_url, EXP)
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
            trials.handle.update(job, {"state": JOB_STATE_ERROR, "error": ("<class 'lost_workers.Stopped'>", "15")})
        assert requeue(trials) == 1
    doc = jobs.find_one({"tid": 1})
    assert (doc["state"], doc["lost_runs"]) == (JOB_STATE_NEW, 1)
    assert logged == ["Trial 1: no heartbeat from w:1 for 0.3 s: back in the queue (lost run 1).",
                      *["Trial 1: its worker was stopped (SIGTERM): back in the queue."] * lost_workers.MAX_LOST_RUNS]
