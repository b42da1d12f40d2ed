"""What the MongoDB search reads per trial does not grow with the experiment (bench/scale.py
measures it at 100 workers), and reads what hyperopt's own reading would."""
import json
import os
import subprocess
import sys

import bson
import pymongo.monitoring
import pytest
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_NEW, JOB_STATE_RUNNING
from hyperopt.mongoexp import MongoTrials

import mongo_compat
import mongo_search
from conftest import EXP, ROOT, new_jobs
from pruning import at_rung, best_reached
from record import METRIC


class Received(pymongo.monitoring.CommandListener):
    """Bytes of the replies this process receives (registered once: later clients report)."""

    total = 0

    def started(self, event):
        pass

    def succeeded(self, event):
        Received.total += len(bson.encode(event.reply))

    def failed(self, event):
        pass


pymongo.monitoring.register(Received())


def received_by(call):
    before = Received.total
    call()
    return Received.total - before


def finish_jobs(jobs, tids, history_of=lambda tid: [0.1, 0.2 + tid / 1000]):
    for tid in tids:
        history = history_of(tid)
        jobs.update_one(
            {"exp_key": EXP, "tid": tid},
            {
                "$inc": {"version": 1},
                "$set": {
                    "state": JOB_STATE_DONE,
                    "result": {
                        "status": "ok",
                        "loss": -max(history),
                        "history": {METRIC: history, "loss": [1.0] * len(history)},
                    },
                },
            },
        )


def seen(trials):
    return [(t["tid"], t["state"], t["result"]["status"]) for t in trials.trials]


def test_the_drivers_refresh_sees_what_hyperopts_sees(mongo_url, jobs):
    mongo_compat.install()
    new_jobs(jobs, EXP, range(6))
    ours = mongo_search.ExperimentTrials(mongo_url, exp_key=EXP)
    theirs = MongoTrials(mongo_url, exp_key=EXP)
    assert seen(ours) == seen(theirs) == [(tid, JOB_STATE_NEW, "new") for tid in range(6)]
    handle = ours.handle
    running = [handle.reserve([f"w:{i}"], exp_key=EXP) for i in range(4)]  # tids 0-3
    for job in running:  # their first heartbeat
        handle.refresh(job)
    handle.update(running[0], {"result": {"status": "running", "history": {METRIC: [0.1]}}})
    finish_jobs(jobs, [1])
    jobs.update_one(
        {"tid": 2}, {"$set": {"state": JOB_STATE_ERROR}, "$inc": {"version": 1}}
    )  # left out
    new_jobs(jobs, EXP, [6])  # another driver's, finished before this one looks
    finish_jobs(jobs, [6])
    for trials in (ours, theirs):
        trials.refresh()
    assert (
        [(tid, state) for tid, state, _ in seen(ours)]
        == [(tid, state) for tid, state, _ in seen(theirs)]
        == [
            (0, JOB_STATE_RUNNING),
            (1, JOB_STATE_DONE),
            (3, JOB_STATE_RUNNING),
            (4, JOB_STATE_NEW),
            (5, JOB_STATE_NEW),
            (6, JOB_STATE_DONE),
        ]
    )
    done = [t["result"] for t in ours.trials if t["state"] == JOB_STATE_DONE]
    assert done == [t["result"] for t in theirs.trials if t["state"] == JOB_STATE_DONE]
    jobs.update_one(
        {"tid": 2}, {"$set": {"state": JOB_STATE_NEW}, "$inc": {"version": 2}}
    )  # requeued
    for trials in (ours, theirs):
        trials.refresh()
    assert [(tid, state) for tid, state, _ in seen(ours)] == [
        (tid, state) for tid, state, _ in seen(theirs)
    ]
    assert ours.losses() == theirs.losses()  # what TPE reads: no loss for running and queued trials


def test_heartbeats_do_not_make_the_driver_read_the_running_trials_again(mongo_url, jobs):
    mongo_compat.install()
    new_jobs(jobs, EXP, range(40))
    trials = mongo_search.ExperimentTrials(mongo_url, exp_key=EXP)
    handle = trials.handle
    running = [handle.reserve([f"w:{i}"], exp_key=EXP) for i in range(20)]
    trials.refresh()
    big = {"status": "running", "history": {METRIC: [0.5] * 100, "loss": [1.0] * 100}}
    for job in running:  # every running trial beats, with a partial result of 100 epochs
        handle.update(job, {"result": big})
    assert received_by(trials.refresh) < len(running) * len(bson.encode(big)) / 10
    finish_jobs(jobs, [0])
    trials.refresh()
    assert (
        trials.trials[0]["state"] == JOB_STATE_DONE and trials.trials[0]["result"]["status"] == "ok"
    )


def test_the_stopping_rules_read_as_much_at_200_finished_trials_as_at_10(mongo_url, jobs):
    """Curve's best reached: one finished trial read; asha and median read one series of each."""
    mongo_compat.install()
    view = MongoTrials(mongo_url, exp_key=EXP, refresh=False)
    long_history = lambda tid: [0.1 + tid / 10000] * 100  # noqa: E731
    new_jobs(jobs, EXP, range(10))
    finish_jobs(jobs, range(10), long_history)
    new_jobs(jobs, EXP, [1000])
    me = view.handle.reserve(["w:me"], exp_key=EXP)["tid"]
    at_10 = received_by(lambda: best_reached(view, me))
    assert best_reached(view, me) == pytest.approx(0.1009)
    new_jobs(jobs, EXP, range(10, 200))
    finish_jobs(jobs, range(10, 200), long_history)
    assert received_by(lambda: best_reached(view, me)) == at_10
    assert best_reached(view, me) == pytest.approx(0.1199)
    assert sorted(at_rung(view, 3, me)) == sorted(0.1 + tid / 10000 for tid in range(200))


@pytest.mark.slow
def test_scale_quick_loses_nothing_and_runs_nothing_twice(tmp_path):
    curves = tmp_path / "curves"
    curves.mkdir()
    for k in range(6):  # learning curves of 8 epochs, some better than others
        history = {METRIC: [min(0.9, (k + 1) * 0.05 * (e + 1) ** 0.5) for e in range(8)]}
        (curves / f"model_{k}.txt.json").write_text(json.dumps({"history": history, "trial_id": k}))
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "scale.py"),
            "--quick",
            "--kill-share",  # no kill here: see the note on kills in bench/README.md
            "0",
            "--curves",
            str(curves),
            "--work-dir",
            str(tmp_path / "run"),
            "--json",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads((tmp_path / "s.json").read_text())
    for key in (
        "trials_finished",
        "lost",
        "run_twice",
        "bytes_per_trial_first100",
        "bytes_per_trial_last100",
        "ops_per_trial_first100",
        "ops_per_trial_last100",
        "suggest_s_last100",
    ):
        assert key in figures
    assert (figures["trials_finished"], figures["lost"], figures["run_twice"]) == (
        figures["trials"],
        0,
        0,
    )
    assert (
        figures["total_respected"]
        and figures["workers_killed"] == 0
        and figures["driver_exit"] == 0
    )
    assert figures["bytes_per_trial_first100"] > 0 and figures["ops_per_trial_last100"] > 0
    assert "trials finished" in out.stdout
