"""The curve stopping rule on MongoDB workers (the stand-in, or HKS_TEST_MONGO_URL; see
tests/conftest.py), and a requeued trial's dead run, which must not count for the stopping
rules."""
import pytest
from hyperopt.base import JOB_STATE_NEW, JOB_STATE_RUNNING

import lost_workers
import mongo_compat
from conftest import (EXP, check_every_trial_done_once, driver, end_epoch, finish, new_jobs, output,
                      reserved_workers, worker, write_cifar100_archive)
from pruning import METRIC, at_rung, best_reached, curve_bound


def test_a_requeued_trial_loses_the_partial_result_of_its_dead_run(mongo_url, jobs):
    from hyperopt.mongoexp import MongoTrials

    mongo_compat.install()
    new_jobs(jobs, EXP, (0, 1))
    view = MongoTrials(mongo_url, exp_key=EXP, refresh=False)
    dead = view.handle.reserve(["w:1"], exp_key=EXP)
    partial = {"status": "running", "history": {METRIC: [0.9, 0.9]}}  # published, then it died
    jobs.update_one({"_id": dead["_id"]}, {"$set": {"result": partial}})
    me = view.handle.reserve(["w:2"], exp_key=EXP)["tid"]
    assert at_rung(view, 1, me) == [0.9] and best_reached(view, me) == 0.9  # in flight: it counts

    requeue = lost_workers.RequeueLostTrials(EXP, stale_after=0.5, log=lambda line: None)
    assert requeue.requeue(jobs, jobs.find_one({"_id": dead["_id"]}), "no heartbeat") == 1
    doc = jobs.find_one({"_id": dead["_id"]})
    assert (doc["state"], doc["result"]) == (JOB_STATE_NEW, {"status": "new"})
    assert at_rung(view, 1, me) == [] and best_reached(view, me) is None


def test_curve_on_a_worker_stops_a_trial_behind_another_workers_trial_in_flight(mongo_url, jobs):
    """Two workers, each with its own view of the experiment and a trial reserved, their callbacks
    those of objective.py: the first publishes its accuracies with its heartbeat; the second, whose
    curve projects below them, stops."""
    mongo_compat.install()
    new_jobs(jobs, EXP, (0, 1))
    settings = {"prune": "curve", "epochs": 8}
    first, second = reserved_workers(mongo_url, EXP, settings)
    for epoch, accuracy in enumerate([0.3, 0.5, 0.6]):  # nothing to beat yet: goes on
        assert end_epoch(first, epoch, accuracy) is False
    doc = jobs.find_one({"tid": first[0].current_trial["tid"]})
    published = {"status": "running", "history": {METRIC: [0.3, 0.5, 0.6]}}
    assert (doc["state"], doc["result"]) == (JOB_STATE_RUNNING, published)
    stops = [end_epoch(second, epoch, a) for epoch, a in enumerate([0.2, 0.3, 0.35])]
    assert stops == [False, False, True]  # epoch 3: projects to 0.397, below the other's 0.6
    assert second[1][0].pruned_at_epoch == 3 and curve_bound([0.2, 0.3, 0.35], 8) < 0.6
    assert end_epoch(first, 3, 0.65) is False


@pytest.mark.slow
def test_curve_search_on_two_workers_runs_end_to_end(tmp_path, mongo_url, jobs, processes):
    write_cifar100_archive(tmp_path / "ml_req")
    workers = [worker(processes, f"worker{i}", mongo_url) for i in (1, 2)]
    out = finish(driver(processes, "driver", mongo_url, "--max-evals", "4", "--epochs", "4",
                        "--prune", "curve"))

    docs, files = check_every_trial_done_once(jobs, tmp_path, 4)
    assert all(output(w).count("Hyperspace:") >= 1 for w in workers)
    for r in files.values():
        accuracy = r["history"]["val_fine_outputs_accuracy"]
        assert (r["epochs_budget"], r["epochs_run"]) == (4, 3 if r["pruned"] else 4)
        if r["pruned"]:  # stopped at epoch 3 (the only one judged of 4): another had reached more
            bound = curve_bound(accuracy, 4)
            assert r["pruned_at_epoch"] == 3 and r["loss"] == -max(accuracy) and bound is not None
            assert any(max(o["history"]["val_fine_outputs_accuracy"]) > bound
                       for o in files.values() if o["trial_id"] != r["trial_id"])
    done = [line for line in out.splitlines() if line.startswith("Trial ") and " done (" in line]
    pruned = sum("(pruned at epoch 3)" in line for line in done)
    assert len(done) == 4 and sum(r["pruned"] for r in files.values()) == pruned
