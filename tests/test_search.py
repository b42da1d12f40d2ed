"""The driver end to end, as a user runs it: a subprocess in a fresh folder."""
import json
import os
import pickle
import subprocess
import sys

import pytest

from conftest import QUICK_SEED, ROOT, write_cifar10_archive, write_cifar100_archive

CLASSIC_KEYS = {"loss", "real_loss", "fine_best_accuracy", "fine_best_loss", "fine_end_accuracy",
                "fine_end_loss",
                "coarse_best_accuracy", "coarse_best_loss", "coarse_end_accuracy",
                "coarse_end_loss", "model_name", "space", "history", "status"}
ADDED_KEYS = {"fine_test_accuracy", "coarse_test_accuracy", "epochs_run", "best_epoch",
              "train_time_s",
              "nb_params", "dataset", "validation", "seed", "train_size", "epochs_budget",
              "trial_id"}


# One epoch of small networks on 60 images: what the searches check is the same on more.
QUICK = ["--epochs", "1", "--train-subset", "60", "--seed", QUICK_SEED]


def run(args, cwd, **env):
    return subprocess.run([sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def result_files(folder):
    return sorted((folder / "results").glob("*.txt.json"))


@pytest.mark.slow
def test_search_writes_results_and_resumes_to_the_total(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req")
    first = run([*QUICK, "--max-evals", "2"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Found 0 saved trials" in first.stdout and "Best of 2 trials" in first.stdout
    files = result_files(tmp_path)
    assert len(files) == 2
    for f in files:
        result = json.loads(f.read_text())
        assert CLASSIC_KEYS | ADDED_KEYS <= set(result), f.name
        assert f.name == result["model_name"] + ".txt.json"
        assert f.name.startswith(f"model_{result['fine_best_accuracy']:.4f}_")
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert len(trials.trials) == 2
    assert sorted(json.loads(f.read_text())["trial_id"]
                  for f in files) == [t["tid"] for t in trials.trials]
    before = [(t["tid"], t["misc"]["vals"], t["result"]) for t in trials.trials]

    second = run([*QUICK, "--max-evals", "3"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Found 2 saved trials in results.pkl; 1 more will run" in second.stdout
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert len(trials.trials) == 3 and len(result_files(tmp_path)) == 3
    assert [(t["tid"], t["misc"]["vals"], t["result"]) for t in trials.trials[:2]] == before
    # a new point, not a replay
    assert trials.trials[2]["misc"]["vals"] != trials.trials[0]["misc"]["vals"]

    done = run([*QUICK, "--max-evals", "3"], tmp_path)
    assert done.returncode == 0 and "0 more will run" in done.stdout and len(
        result_files(tmp_path)) == 3


@pytest.mark.slow
def test_cifar10_searches_and_retrains_with_the_fine_keys(tmp_path):
    write_cifar10_archive(tmp_path / "ml_req")
    out = run(["--dataset", "cifar10", *QUICK, "--max-evals", "2"], tmp_path)
    assert out.returncode == 0, out.stderr
    results = [json.loads(f.read_text()) for f in result_files(tmp_path)]
    assert [r["status"] for r in results] == ["ok", "ok"], [r.get("error") for r in results]
    for r in results:
        assert isinstance(r["fine_best_accuracy"],
                          float) and isinstance(r["fine_test_accuracy"], float)
        assert r["loss"] == -r["fine_best_accuracy"] and r["coarse_best_accuracy"] is None
        assert r["dataset"] == "cifar10" and "val_fine_outputs_accuracy" in r["history"]

    retrain = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset",
                              "cifar10",
                              "--epochs", "1", "--train-subset", "60", "--no-tensorboard"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    retrained = [json.loads(f.read_text()) for f in result_files(tmp_path)]
    retrained = [r for r in retrained
                 if r["model_name"] not in {old["model_name"] for old in results}]
    assert len(retrained) == 1 and retrained[0]["status"] == "ok"
    assert isinstance(retrained[0]["fine_test_accuracy"],
                      float) and "val_fine_outputs_loss" in retrained[0]["history"]
    assert (tmp_path / "results" / (retrained[0]["model_name"] + ".keras")).exists()


def test_corrupt_trials_file_is_left_untouched(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req")
    (tmp_path / "results.pkl").write_bytes(b"not a pickle at all")
    out = run(["--epochs", "1", "--max-evals", "1"], tmp_path)
    assert out.returncode == 1
    assert "results.pkl is not a readable trials file" in out.stderr and "untouched" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert (tmp_path / "results.pkl").read_bytes() == b"not a pickle at all"
    assert not (tmp_path / "results").exists()


def test_missing_archive_is_one_line_saying_where_to_put_it(tmp_path):
    out = run(["--max-evals", "1"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "cifar-100-python.tar.gz" in out.stderr and "ml_req" in out.stderr


def test_truncated_archive_is_one_line(tmp_path):
    path = write_cifar100_archive(tmp_path / "ml_req")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    out = run(["--max-evals", "1"], tmp_path)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "truncated" in out.stderr


@pytest.mark.parametrize("args, option", [
    (["--epochs", "0"], "--epochs"), (["--epochs", "ten"], "--epochs"),
    (["--max-evals", "-3"], "--max-evals"),
    (["--train-subset", "0"], "--train-subset"), (["--dataset", "mnist"], "--dataset"),
    (["--validation", "train"], "--validation"), (["--seed", "x"], "--seed"),
    (["--epoch", "3"], "--epoch"),
])
def test_bad_option_is_a_usage_error_naming_it(args, option, capsys):
    # in-process: argparse's exit is what the command line gets (checked below)
    import hyperopt_optimize
    with pytest.raises(SystemExit) as exit_:
        hyperopt_optimize.parse_args(args)
    assert exit_.value.code == 2 and option in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("variable, value, option", [("HKS_MAX_EVALS", "many", "--max-evals"),
                                                     ("HKS_PRUNE", "sometimes", "--prune"),
                                                     ("HKS_PRUNE_ETA", "1", "--prune-eta")])
def test_bad_env_value_is_a_usage_error(monkeypatch, capsys, variable, value, option):
    import hyperopt_optimize
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_:
        hyperopt_optimize.parse_args([])
    assert exit_.value.code == 2 and option in capsys.readouterr().err


def test_bad_option_on_the_command_line_exits_with_status_2(tmp_path):
    out = run(["--epochs", "0"], tmp_path)
    assert out.returncode == 2 and "--epochs" in out.stderr.splitlines()[
        -1] and not (tmp_path / "results").exists()


def test_search_goes_on_when_every_trial_fails(tmp_path, monkeypatch, capsys):
    import hyperopt_optimize
    import neural_net

    def bad_combination(*args, **kwargs):
        raise ValueError("this combination cannot be built")
    monkeypatch.setattr(neural_net, "build_model", bad_combination)
    # the patch above applies in this process only
    monkeypatch.setattr(hyperopt_optimize, "TRIAL_PROCESS", False)
    write_cifar100_archive(tmp_path / "ml_req")
    monkeypatch.chdir(tmp_path)
    assert hyperopt_optimize.run_search(
        hyperopt_optimize.parse_args(["--epochs", "1", "--max-evals", "2"])) == 0
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert [t["result"]["status"] for t in trials.trials] == ["fail", "fail"]
    assert "cannot be built" in trials.trials[0]["result"]["error"]
    assert len(list((tmp_path / "results").glob("failed_*.txt.json"))) == 2
    assert "No trial has finished successfully yet" in capsys.readouterr().out
