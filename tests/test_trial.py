"""One trial and the objective around it: settings built once, rules fed by epoch, Keras loaded
late."""
import dataclasses
import functools
import io
import pickle
import subprocess
import sys

import pytest
from hyperopt import Trials
from hyperopt.base import Ctrl
from hyperopt.pyll import as_apply

from conftest import ROOT


def test_settings_are_one_frozen_value_built_from_options_and_environment(monkeypatch):
    import hyperopt_optimize
    from settings import Settings

    monkeypatch.setenv("HKS_EPOCHS", "7")
    settings = Settings.from_args(hyperopt_optimize.parse_args(["--prune", "median"]))
    assert (settings.epochs, settings.prune, settings.dataset) == (7, "median", "cifar100")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3
    # with keys of other versions
    stored = {**settings.as_dict(), "verbose": 2, "hks_experiment_version": 2}
    assert Settings.from_dict(stored) == settings


def test_the_objective_and_the_rules_load_no_keras():
    """A MongoDB worker's trial imports Keras to train, inside its heartbeat (objective.run)."""
    code = ("import sys; import objective, pruning, lost_workers, record, settings; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_objective_pickled_with_its_settings_as_a_dict_still_runs(monkeypatch):
    """Experiments already in MongoDB hold objectives bound to a settings dict (and save_result)."""
    import objective
    import trial

    seen = []

    def fake_run_trial(hype_space, settings, rule, hooks, trial_id):
        seen.append((hype_space, settings, rule, trial_id))
        return {"status": "ok", "loss": -0.5}, None

    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    old = functools.partial(objective._objective, save_result=True,
                            settings={"epochs": 3, "prune": "none", "verbose": 2, "seed": 1})
    loaded = pickle.loads(pickle.dumps(old))
    result = loaded(as_apply({"lr_rate_mult": 1.0}), {}, Ctrl(Trials(), current_trial={"tid": 4}))
    assert result == {"status": "ok", "loss": -0.5}
    ((space, settings, rule, tid),) = seen
    assert (space, settings.epochs, settings.seed) == ({"lr_rate_mult": 1.0}, 3, 1)
    assert (rule, tid) == (None, 4)


def test_a_progress_bar_within_each_epoch_on_a_terminal_and_one_line_per_epoch_in_logs(monkeypatch):
    import trial

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert trial.fit_verbosity() == 1  # Keras' progress bar
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert trial.fit_verbosity() == 2  # one line per epoch
