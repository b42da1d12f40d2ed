"""The median stopping rule: checks on hand-made finished trials. The real search prunes in
tests/test_bench.py (bench/search_efficiency.py --quick), checked trial by trial there."""
import pytest
from hyperopt import JOB_STATE_DONE, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Trials

from conftest import write_cifar100_archive
from neural_net import build_and_train
from pruning import PRUNE_MIN_TRIALS, MedianStoppingRule, best_by_epoch, prune_warmup
from test_neural_net import SMALL


def add_trial(trials, accuracies, status=STATUS_OK, state=JOB_STATE_DONE):
    """A trial as another worker would have left it: inserted into the store, not yet refreshed."""
    tid = trials.new_trial_ids(1)[0]
    result = {"status": status, "loss": -max(accuracies, default=0),
              "history": {"val_fine_outputs_accuracy": list(accuracies)}}
    doc = trials.new_trial_docs([tid], [None], [result], [{"tid": tid, "cmd": None, "idxs": {}, "vals": {}}])[0]
    doc["state"] = state
    trials.insert_trial_docs([doc])


def test_best_by_epoch_refreshes_and_reads_only_finished_trials_that_got_that_far():
    trials = Trials()
    add_trial(trials, [0.1, 0.3, 0.2])
    add_trial(trials, [0.4, 0.2])  # pruned at epoch 2: counts up to there
    add_trial(trials, [0.9, 0.9, 0.9], status=STATUS_FAIL)
    add_trial(trials, [0.9, 0.9, 0.9], state=JOB_STATE_RUNNING)
    assert trials.trials == []  # nothing seen before a refresh, as with MongoTrials
    assert sorted(best_by_epoch(trials, 1)) == [0.1, 0.4]
    assert sorted(best_by_epoch(trials, 2)) == [0.3, 0.4]
    assert best_by_epoch(trials, 3) == [0.3]


def test_warmup_is_a_tenth_of_the_budget_and_at_least_two_epochs():
    assert [prune_warmup(n) for n in (1, 3, 20, 29, 100)] == [2, 2, 2, 2, 10]


@pytest.fixture
def tiny_settings(tmp_path):
    data_dir = tmp_path / "ml_req"
    write_cifar100_archive(data_dir, classes=range(10), train_per_class=20, test_per_class=2)
    return dict(epochs=4, data_dir=str(data_dir), results_dir=str(tmp_path / "results"), verbose=0)


def train_against(finished, settings, **space_changes):
    trials = Trials()
    for accuracies in finished:
        add_trial(trials, accuracies)
    return build_and_train(dict(SMALL, batch_size=32.0, **space_changes), settings,
                           callbacks=[MedianStoppingRule(trials, settings["epochs"])])


def test_a_trial_behind_five_finished_ones_is_pruned_after_its_warmup(tiny_settings):
    # A median of 1.0 can only be equalled, and a learning rate this small keeps the trial from it.
    result = train_against([[1.0] * 4] * PRUNE_MIN_TRIALS, tiny_settings, lr_rate_mult=1e-6)
    assert result["status"] == STATUS_OK, result.get("error")
    assert result["pruned"] is True and result["pruned_at_epoch"] == 2 == result["epochs_run"]
    assert result["epochs_budget"] == 4
    assert result["loss"] == -result["fine_best_accuracy"] == -max(result["history"]["val_fine_outputs_accuracy"])


@pytest.mark.parametrize("finished", [[[1.0] * 4] * (PRUNE_MIN_TRIALS - 1),  # too few finished trials to judge
                                      [[0.0] * 4] * PRUNE_MIN_TRIALS,  # ahead of the median
                                      [[1.0]] * PRUNE_MIN_TRIALS])  # none got to the warm-up epoch
def test_no_pruning_without_evidence_against_the_trial(tiny_settings, finished):
    result = train_against(finished, tiny_settings)
    assert result["status"] == STATUS_OK, result.get("error")
    assert result["pruned"] is False and result["pruned_at_epoch"] is None and result["epochs_run"] == 4
