"""The stopping rules (median, asha): checks on hand-made trials. The real searches prune in
tests/test_bench.py (bench/search_efficiency.py --quick), checked trial by trial there; asha on
MongoDB workers in tests/test_mongo.py."""
import pytest
from hyperopt import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_RUNNING, STATUS_FAIL, STATUS_OK, Trials

from conftest import write_cifar100_archive
from objective import make_objective
from pruning import (METRIC, PRUNE_MIN_TRIALS, AshaRule, CurveRule, MedianStoppingRule, asha_goes_on, asha_rungs,
                     at_rung, best_by_epoch, best_reached, curve_bound, prune_warmup)
from record import best_result
from search_space import space
from settings import Settings
from test_neural_net import SMALL
from trial import run_trial


def add_trial(trials, accuracies, status=STATUS_OK, state=JOB_STATE_DONE, pruned=None):
    """A trial as another worker would have left it: inserted into the store, not yet refreshed.
    A running trial (status "running") carries its partial result: no loss."""
    tid = trials.new_trial_ids(1)[0]
    result = {"status": status, "history": {METRIC: list(accuracies)}}
    if status != "running":
        result["loss"] = -max(accuracies, default=0)
    if pruned is not None:
        result["pruned"] = pruned
    doc = trials.new_trial_docs([tid], [None], [result], [{"tid": tid, "cmd": None, "idxs": {}, "vals": {}}])[0]
    doc["state"] = state
    trials.insert_trial_docs([doc])
    return tid


def test_best_by_epoch_refreshes_and_reads_only_trials_that_ran_to_the_end():
    trials = Trials()
    add_trial(trials, [0.1, 0.3, 0.2], pruned=False)
    add_trial(trials, [0.05, 0.2, 0.25])  # results of earlier versions have no "pruned": ran to the end
    add_trial(trials, [0.4, 0.2], pruned=True)  # behind at epoch 2: does not pull the median down
    add_trial(trials, [0.9, 0.9, 0.9], status=STATUS_FAIL)
    add_trial(trials, [0.9, 0.9, 0.9], state=JOB_STATE_RUNNING)
    assert trials.trials == []  # nothing seen before a refresh, as with MongoTrials
    assert sorted(best_by_epoch(trials, 1)) == [0.05, 0.1]
    assert sorted(best_by_epoch(trials, 3)) == [0.25, 0.3]
    assert sorted(best_by_epoch(trials, 2, count_pruned=True)) == [0.2, 0.3, 0.4]  # the rule before


def test_asha_rungs_are_min_epochs_times_powers_of_eta_below_the_budget():
    assert asha_rungs(10) == [1, 3, 9]
    assert asha_rungs(9) == [1, 3]  # no rung at the last epoch: stopping there saves nothing
    assert asha_rungs(100, min_epochs=2, eta=4) == [2, 8, 32]
    assert asha_rungs(1) == [] and asha_rungs(3, min_epochs=5) == []


@pytest.mark.parametrize("accuracy, others, eta, goes_on", [
    (0.1, [], 3, True),  # the first trial at a rung has nothing to compare with: it goes on
    (0.1, [0.9], 3, False),  # second at the rung: max(1, 2 // 3) = 1 goes on, the better one
    (0.9, [0.1], 3, True),
    (0.5, [0.5, 0.1], 3, True),  # ties go on
    (0.5, [0.6, 0.1], 3, False),  # 3 at the rung: top 1
    (0.5, [0.6, 0.9, 0.1, 0.2, 0.3], 3, False),  # 6 at the rung: top 2; two better
    (0.7, [0.6, 0.9, 0.1, 0.2, 0.3], 3, True),  # second of 6
    (0.7, [0.6, 0.9, 0.1], 2, True),  # eta 2: top 2 of 4
    (0.5, [0.6, 0.9, 0.1], 2, False),
])
def test_asha_keeps_the_top_one_over_eta_of_the_trials_at_the_rung_and_at_least_one(accuracy, others, eta, goes_on):
    assert asha_goes_on(accuracy, others, eta) is goes_on


def test_at_rung_reads_every_recorded_trial_that_got_there_but_itself_and_failed_ones():
    trials = Trials()
    add_trial(trials, [0.1, 0.3, 0.2, 0.4], pruned=False)  # finished
    add_trial(trials, [0.5], pruned=True)  # pruned at epoch 1
    add_trial(trials, [0.6, 0.7], status="running", state=JOB_STATE_RUNNING)  # in flight: its partial result
    add_trial(trials, [0.9, 0.9], status=STATUS_FAIL)
    add_trial(trials, [0.9, 0.9], status="running", state=JOB_STATE_ERROR)  # its worker died
    me = add_trial(trials, [0.8, 0.8], status="running", state=JOB_STATE_RUNNING)
    assert sorted(at_rung(trials, 1, me)) == [0.1, 0.5, 0.6]
    assert sorted(at_rung(trials, 2, me)) == [0.3, 0.7]
    assert at_rung(trials, 3, me) == [0.3]


def feed(rule, accuracies):
    """Report a trial's validation accuracies to a rule epoch by epoch, as trial.py does; the epochs run."""
    for epoch, accuracy in enumerate(accuracies, 1):
        if not rule.report(epoch, accuracy):
            return epoch
    return len(accuracies)


def test_asha_rule_stops_at_the_first_rung_where_the_trial_is_not_in_the_top_third():
    trials = Trials()
    for accuracies in ([0.5, 0.6, 0.7, 0.8, 0.8], [0.1, 0.2], [0.2]):
        add_trial(trials, accuracies)
    me = add_trial(trials, [], status="running", state=JOB_STATE_RUNNING)
    rule = AshaRule(trials, epochs_budget=5, this_tid=me, eta=3)  # rungs 1, 3
    # Rung 1: 0.3 against 0.5, 0.1, 0.2: second of 4, max(1, 4 // 3) = 1 go on: stops at epoch 1.
    assert feed(rule, [0.3, 0.9, 0.9, 0.9, 0.9]) == 1 == rule.pruned_at_epoch
    assert rule.partial_result() == {"status": "running", "history": {METRIC: [0.3]}}
    rule = AshaRule(trials, epochs_budget=5, this_tid=me, eta=3)
    # Rung 1: 0.6 is first of 4. Rung 3: the best so far, 0.6, against 0.7 alone: second of 2: stops.
    assert feed(rule, [0.6, 0.4, 0.5, 0.9, 0.9]) == 3 == rule.pruned_at_epoch
    rule = AshaRule(trials, epochs_budget=5, this_tid=me, eta=3)
    assert feed(rule, [0.6, 0.4, 0.7, 0.9, 0.9]) == 5 and rule.pruned_at_epoch is None  # a tie at rung 3 goes on


def test_the_first_trial_at_every_rung_goes_on():
    trials = Trials()
    me = add_trial(trials, [], status="running", state=JOB_STATE_RUNNING)
    rule = AshaRule(trials, epochs_budget=10, this_tid=me)
    assert feed(rule, [0.0] * 10) == 10 and rule.pruned_at_epoch is None


def test_a_local_search_publishes_a_running_trials_progress_that_looks_finished_to_nothing(monkeypatch):
    """objective.py checkpoints the partial result each epoch: in the local trials object, while the trial runs."""

    seen = []

    def fake_run_trial(hype_space, settings, rule, hooks, trial_id):
        for epoch, accuracy in enumerate([0.2, 0.4], 1):
            rule.report(epoch, accuracy)
            for hook in hooks:  # what stores the rule's partial result
                hook()
            doc = rule.trials._dynamic_trials[-1]
            seen.append((doc["state"], dict(doc["result"])))
            assert best_result(rule.trials) is None  # the report and the driver read only status ok
            assert "loss" not in doc["result"]  # TPE scores a trial without a loss as infinitely bad
        return {"status": STATUS_OK, "loss": -0.4, "history": {METRIC: [0.2, 0.4]}, "pruned": False}, None

    import trial

    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    from hyperopt import fmin, tpe

    trials = Trials()
    fmin(make_objective(Settings(prune="asha", epochs=2, prune_eta=3, prune_min_epochs=1)), space,
         algo=tpe.suggest, trials=trials, max_evals=1, show_progressbar=False)
    assert seen == [(JOB_STATE_RUNNING, {"status": "running", "history": {METRIC: [0.2]}}),
                    (JOB_STATE_RUNNING, {"status": "running", "history": {METRIC: [0.2, 0.4]}})]
    assert trials.trials[0]["state"] == JOB_STATE_DONE and trials.trials[0]["result"]["loss"] == -0.4


def test_warmup_is_a_tenth_of_the_budget_and_at_least_two_epochs():
    assert [prune_warmup(n) for n in (1, 3, 20, 29, 100)] == [2, 2, 2, 2, 10]


@pytest.fixture
def tiny_settings(tmp_path):
    data_dir = tmp_path / "ml_req"
    write_cifar100_archive(data_dir, classes=range(10), train_per_class=20, test_per_class=2)
    return Settings(epochs=4, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))


def train_against(finished, settings, rule=MedianStoppingRule, **space_changes):
    trials = Trials()
    for accuracies in finished:
        add_trial(trials, accuracies)
    result, _ = run_trial(dict(SMALL, batch_size=32.0, **space_changes), settings,
                          rule(trials, settings.epochs))
    return result


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


def test_a_trial_behind_at_asha_first_rung_is_recorded_as_pruned_with_its_honest_loss(tiny_settings):
    result = train_against([[1.0] * 4], tiny_settings, rule=AshaRule, lr_rate_mult=1e-6)
    assert result["status"] == STATUS_OK, result.get("error")
    assert result["pruned"] is True and result["pruned_at_epoch"] == 1 == result["epochs_run"]
    assert result["loss"] == -result["fine_best_accuracy"] == -result["history"]["val_fine_outputs_accuracy"][0]


def test_asha_options_and_their_env_twins_are_stored_in_the_trial_settings(monkeypatch, capsys):
    import hyperopt_optimize

    settings = Settings.from_args(hyperopt_optimize.parse_args(["--prune", "asha", "--prune-eta", "4",
                                                                "--prune-min-epochs", "2"]))
    assert (settings.prune, settings.prune_eta, settings.prune_min_epochs) == ("asha", 4, 2)
    monkeypatch.setenv("HKS_PRUNE", "asha")
    monkeypatch.setenv("HKS_PRUNE_ETA", "2")
    monkeypatch.setenv("HKS_PRUNE_MIN_EPOCHS", "3")
    settings = Settings.from_args(hyperopt_optimize.parse_args([]))
    assert (settings.prune, settings.prune_eta, settings.prune_min_epochs) == ("asha", 2, 3)
    for args, option in ((["--prune-eta", "1"], "--prune-eta"), (["--prune-min-epochs", "0"], "--prune-min-epochs"),
                         (["--prune", "hyperband"], "--prune")):
        with pytest.raises(SystemExit) as exit_:
            hyperopt_optimize.parse_args(args)
        assert exit_.value.code == 2 and option in capsys.readouterr().err.splitlines()[-1]


def test_a_requeued_trial_keeps_no_say_with_the_partial_result_of_its_dead_run():
    """A job requeued after its worker died is new again; what its dead run published does not count."""
    from hyperopt import JOB_STATE_NEW

    trials = Trials()
    add_trial(trials, [0.5, 0.6], pruned=False)
    add_trial(trials, [0.9, 0.9], status="running", state=JOB_STATE_NEW)  # requeued, not yet started again
    me = add_trial(trials, [0.1], status="running", state=JOB_STATE_RUNNING)
    assert at_rung(trials, 1, me) == [0.5]
    assert best_reached(trials, me) == 0.6


def test_best_by_epoch_reads_running_averages_as_vizier_does():
    trials = Trials()
    add_trial(trials, [0.1, 0.3, 0.2], pruned=False)
    add_trial(trials, [0.2, 0.2, 0.5], pruned=False)
    assert sorted(best_by_epoch(trials, 2)) == [0.2, 0.3]
    assert sorted(best_by_epoch(trials, 3, running_average=True)) == pytest.approx([0.2, 0.3])


def test_curve_bound_adds_a_shrinking_gain_per_remaining_doubling_of_epochs():
    r = 2 ** -0.5
    # Epoch 4 of 16: the best so far gained 0.1 over epochs 2-4, 0.2 over 1-2; two doublings left.
    assert curve_bound([0.2, 0.4, 0.45, 0.5], 16) == pytest.approx(0.5 + 0.1 * (r + r * r))
    assert curve_bound([0.2, 0.4, 0.45, 0.5], 16, slowdown=1) == pytest.approx(0.5 + 0.1 * 2)
    assert curve_bound([0.2, 0.5, 0.45, 0.4], 16) == pytest.approx(0.5)  # the best so far, not the last epoch
    assert curve_bound([0.1, 0.12, 0.3, 0.5], 16) is None  # speeding up (0.38 after 0.02): a slow starter
    assert curve_bound([0.2, 0.4], 16) is None  # before the warm-up: one doubling, nothing to compare it with
    assert curve_bound([0.2, 0.4, 0.5, 0.55], 4) == pytest.approx(0.55)  # no epochs left


def test_curve_rule_stops_a_trial_whose_projection_cannot_reach_the_best_any_trial_reached():
    trials = Trials()
    add_trial(trials, [0.3, 0.5, 0.6, 0.62], pruned=False)
    add_trial(trials, [0.1, 0.2, 0.66], status="running", state=JOB_STATE_RUNNING)  # in flight: 0.66 counts
    add_trial(trials, [0.95], status=STATUS_FAIL)
    me = add_trial(trials, [], status="running", state=JOB_STATE_RUNNING)
    rule = CurveRule(trials, epochs_budget=16, this_tid=me)
    # Epoch 3: gains 0.1 (epochs 2-3) after 0.2 (1-2): bound 0.5 + 0.1 * (r + r**2 + r**3 * ...) < 0.66.
    assert feed(rule, [0.2, 0.4, 0.5, 0.9]) == 3 == rule.pruned_at_epoch
    assert rule.partial_result() == {"status": "running", "history": {METRIC: [0.2, 0.4, 0.5]}}
    rule = CurveRule(trials, epochs_budget=16, this_tid=me)
    assert feed(rule, [0.2, 0.25, 0.45, 0.5]) == 4 and rule.pruned_at_epoch is None  # speeding up at epoch 3
    rule = CurveRule(trials, epochs_budget=3, this_tid=me)
    assert feed(rule, [0.1, 0.2, 0.25]) == 3 and rule.pruned_at_epoch is None  # the last epoch: stopping saves nothing
    alone = Trials()
    rule = CurveRule(alone, epochs_budget=16, this_tid=add_trial(alone, [], status="running", state=JOB_STATE_RUNNING))
    assert feed(rule, [0.1, 0.2, 0.25, 0.3]) == 4 and rule.pruned_at_epoch is None  # nothing to beat yet


def test_the_curve_rule_is_an_option_and_its_env_twin(monkeypatch):
    import hyperopt_optimize
    from pruning import stopping_rule

    assert Settings.from_args(hyperopt_optimize.parse_args(["--prune", "curve"])).prune == "curve"
    monkeypatch.setenv("HKS_PRUNE", "curve")
    settings = Settings.from_args(hyperopt_optimize.parse_args([]))
    assert settings.prune == "curve"
    rule = stopping_rule(settings, Trials(), this_tid=7)
    assert isinstance(rule, CurveRule) and (rule.epochs_budget, rule.this_tid) == (settings.epochs, 7)


@pytest.mark.parametrize("test_per_class, rule", [(19, MedianStoppingRule), (20, CurveRule)])
def test_auto_is_the_curve_rule_from_2000_validation_images_and_median_below(tmp_path, test_per_class, rule):
    """The default, --prune auto, judges by what the trial selects on: here the test set, 100 classes."""
    from hyperopt.base import Ctrl

    from objective import trial_rule

    write_cifar100_archive(tmp_path / "ml_req", train_per_class=1, test_per_class=test_per_class)
    settings = Settings(data_dir=str(tmp_path / "ml_req"), validation="test", epochs=10)
    assert settings.prune == "auto"
    trials = Trials()
    me = add_trial(trials, [], status="running", state=JOB_STATE_RUNNING)
    assert type(trial_rule(settings, Ctrl(trials, current_trial={"tid": me}))) is rule
