"""Seeing a search: the report and its pictures, model_best.png, TensorBoard logs, and the retrain of the best."""
import importlib.util
import itertools
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, rand
from hyperopt.pyll import stochastic
from PIL import Image

from conftest import ROOT, classic_result, needs_graphviz, write_cifar100_archive
from search_space import space

FIGURES = ["hyperparameters_scatter_matrix.png", "accuracy_vs_hyperparameters.png", "search_history.png"]
SMALL = {"activation": "elu", "batch_size": 32.0, "coarse_labels_weight": 0.3, "conv_dropout_drop_proba": 0.1,
         "conv_hiddn_units_mult": 0.3, "conv_kernel_size": 3.0, "conv_pool_res_start_idx": 0.0,
         "fc_dropout_drop_proba": 0.2, "fc_units_1_mult": 0.2, "first_conv": None, "l2_weight_reg_mult": 0.4,
         "lr_rate_mult": 1.0, "nb_conv_pool_layers": 2, "one_more_fc": None, "optimizer": "Nadam",
         "pooling_type": "max", "res_conv_kernel_size": 2.0, "residual": 1.0, "use_BN": True}


def run(script, args, cwd, python_args=(), **env):
    return subprocess.run([sys.executable, *python_args, os.path.join(ROOT, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def assert_real_picture(path):
    """A PNG with content: not blank, not one flat colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    assert min(pixels.shape[:2]) > 200, f"{path.name} is tiny: {pixels.shape}"
    assert pixels.std() > 20, f"{path.name} is nearly blank"
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert len(colours) >= 16, f"{path.name} has {len(colours)} colours"


def leaderboard_rows(stdout):
    """The leaderboard's rows as lists of cells (they follow the header line that starts with 'rank')."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"]) + 1
    return [line.split() for line in itertools.takewhile(lambda line: line[:5].strip().isdigit(), lines[start:])]


def test_report_on_classic_result_files(tmp_path):
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    results.mkdir()
    accuracies = rng.uniform(0.05, 0.68, 30)
    for accuracy in accuracies:
        name = f"model_{accuracy:.12g}_{rng.integers(16 ** 5):05x}"  # the classic names: long float, 5 hex digits
        result = dict(classic_result(accuracy, stochastic.sample(space, rng=rng), int(rng.integers(5, 100))),
                      model_name=name)
        (results / f"{name}.txt.json").write_text(json.dumps(result, default=float))
    # One pruned and two failed models written by this repo, and one broken file.
    pruned = dict(classic_result(0.02, SMALL, 3), model_name="model_0.0200_aaaaaaaa", pruned=True,
                  pruned_at_epoch=3, epochs_run=3, trial_id=7, train_time_s=12.0)
    (results / "model_0.0200_aaaaaaaa.txt.json").write_text(json.dumps(pruned))
    for i in range(2):
        failed = {"status": "fail", "model_name": f"failed_{i}", "space": SMALL,
                  "error": "FloatingPointError: loss became NaN at epoch 2"}
        (results / f"failed_{i}.txt.json").write_text(json.dumps(failed))
    (results / "model_0.5_broken.txt.json").write_text('{"loss": -0.5, "sp')

    out = run("report.py", ["--top", "0"], tmp_path, python_args=["-X", "importtime"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "results/: 33 models, 30 ok, 1 pruned, 2 failed" in out.stdout
    assert "1 unreadable result files skipped: model_0.5_broken.txt.json" in out.stdout
    assert "Failed: 2 FloatingPointError" in out.stdout
    rows = leaderboard_rows(out.stdout)
    assert len(rows) == 31 and [int(r[0]) for r in rows] == list(range(1, 32))
    assert [float(r[2]) for r in rows] == [round(a, 4) for a in sorted([*accuracies, 0.02], reverse=True)]
    assert rows[0][-1] == f"model_{accuracies.max():.12g}" + rows[0][-1][-6:]
    assert "pruned" in next(r for r in rows if r[-1] == "model_0.0200_aaaaaaaa")
    for name in FIGURES:
        assert_real_picture(results / name)
    # The leaderboard path never loads Keras or TensorFlow (python -X importtime lists every import).
    imported = re.findall(r"^import time:.*\|\s*([\w.]+)$", out.stderr, re.MULTILINE)
    assert "pandas" in imported and not [m for m in imported if m.split(".")[0] in ("keras", "tensorflow", "jax")]


FAKE_TRIALS = itertools.count()


def fake_trial(hype_space):
    """Results as this repo's objective returns them, without training: 4 ok, 1 failed, 1 pruned."""
    i = next(FAKE_TRIALS)
    if i == 4:
        return {"status": STATUS_FAIL, "model_name": "failed_4", "error": "ResourceExhaustedError: OOM"}
    accuracy = 0.1 + 0.1 * i
    return {"status": STATUS_OK, "loss": -accuracy, "fine_best_accuracy": accuracy, "coarse_best_accuracy": 0.5,
            "fine_test_accuracy": accuracy - 0.01, "coarse_test_accuracy": 0.49, "epochs_run": 3 if i == 5 else 10,
            "epochs_budget": 10, "train_time_s": 60.0, "model_name": f"model_{accuracy:.4f}_{i}", "space": hype_space,
            "trial_id": i,
            **({"pruned": True, "pruned_at_epoch": 3} if i == 5 else {})}


def test_report_merges_the_trials_file_with_the_result_files(tmp_path):
    trials = Trials()
    fmin(fake_trial, space, algo=rand.suggest, trials=trials, max_evals=6, show_progressbar=False,
         rstate=np.random.default_rng(0))
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(trials))
    results = tmp_path / "results"
    results.mkdir()
    for t in trials.trials[1:4]:  # three models also have their result file; the others are in results.pkl only
        (results / (t["result"]["model_name"] + ".txt.json")).write_text(json.dumps(t["result"], default=float))

    out = run("report.py", [], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "results/ and results.pkl: 6 models, 4 ok, 1 pruned, 1 failed" in out.stdout
    assert "Failed: 1 ResourceExhaustedError" in out.stdout
    rows = leaderboard_rows(out.stdout)
    assert [(r[1], r[2], r[4]) for r in rows] == [("6", "0.6000", "0.5900"), ("4", "0.4000", "0.3900"),
                                                  ("3", "0.3000", "0.2900"), ("2", "0.2000", "0.1900"),
                                                  ("1", "0.1000", "0.0900")]
    assert rows[0][6:8] == ["3", "pruned"] and rows[1][6] == "10"
    assert "Epochs trained: 43; pruning stopped 1 trials early and saved 7 epochs (14.0% of their budgets' 50)" \
        in out.stdout
    assert "python3 train.py --space results/model_0.6000_5.txt.json" not in out.stdout  # pkl only: no file
    assert "Best: " not in out.stdout
    for name in FIGURES:
        assert_real_picture(results / name)


def test_report_without_results_is_one_line(tmp_path):
    out = run("report.py", [], tmp_path)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "no results in results/" in out.stderr and "hyperopt_optimize.py" in out.stderr


def test_report_speed_benchmark_runs(tmp_path):
    out = run("bench/report_speed.py", ["--files", "20"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    header, numbers = out.stdout.strip().splitlines()
    assert header.split()[:2] == ["result", "files"] and numbers.split()[0] == "20" and len(numbers.split()) == 8


def test_a_failure_to_draw_model_best_is_one_warning(tmp_path, monkeypatch, capsys):
    import keras

    import trial

    def no_graphviz(*args, **kwargs):
        raise ImportError("You must install graphviz (see instructions at https://graphviz.gitlab.io/download/) "
                          "for `plot_model` to work.")
    monkeypatch.setattr(keras.utils, "plot_model", no_graphviz)
    assert not trial.try_draw_model(SMALL, str(tmp_path / "model_best.png"), "cifar100")
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "install graphviz" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no half-drawn picture left behind


@pytest.mark.slow
@needs_graphviz
def test_tiny_search_with_tensorboard_then_report_with_models(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_cifar100_archive(tmp_path / "ml_req")
    search = run("hyperopt_optimize.py", ["--epochs", "2", "--max-evals", "2", "--tensorboard"], tmp_path)
    assert search.returncode == 0, search.stderr[-3000:]
    assert "New best model: drew results/model_best.png" in search.stdout
    assert re.search(r"About \d+ (s|min) left for 1 more trials", search.stdout)
    assert_real_picture(tmp_path / "results" / "model_best.png")

    finished = [json.loads(f.read_text()) for f in (tmp_path / "results").glob("model_*.txt.json")]
    names = sorted(r["model_name"] for r in finished)
    assert finished and sorted(os.listdir(tmp_path / "TensorBoard")) == sorted([*names, "trials"])
    hparams_runs = tmp_path / "TensorBoard" / "trials"  # and each trial's run of the HParams dashboard
    assert sorted(os.listdir(hparams_runs)) == sorted([*names, "events.out.tfevents.hks-experiment"])
    for result in finished:  # each model's epochs, under its name
        assert result["tensorboard_dir"] == os.path.join("TensorBoard", result["model_name"])
        events = EventAccumulator(str(tmp_path / result["tensorboard_dir"] / "validation"))
        events.Reload()
        steps = [e.step for e in events.Tensors("epoch_fine_outputs_accuracy")]
        assert steps == [0, 1]

    report = run("report.py", ["--models"], tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"results/ and results.pkl: 2 models, {len(finished)} ok" in report.stdout
    assert len(leaderboard_rows(report.stdout)) == len(finished)
    for name in FIGURES + ["model_demo.png", "model_best.png"]:
        assert_real_picture(tmp_path / "results" / name)


@pytest.mark.slow
def test_retrain_saves_a_model_that_loads_and_predicts_as_recorded(tmp_path):
    import keras

    from data import load_split
    from neural_net import build_model

    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=60, test_per_class=10)
    (tmp_path / "space.json").write_text(json.dumps(SMALL))
    out = run("train.py", ["--space", "space.json", "--epochs", "3"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    [path] = (tmp_path / "results").glob("model_*.txt.json")
    result = json.loads(path.read_text())
    assert result["model_file"] == f"results/{result['model_name']}.keras"
    assert result["weights_file"] == f"results/{result['model_name']}.weights.h5"
    assert (tmp_path / "TensorBoard" / result["model_name"] / "train").is_dir()  # TensorBoard on by default

    model = keras.saving.load_model(tmp_path / result["model_file"])
    split = load_split("cifar100", str(tmp_path / "ml_req"), "split", None)
    # The saved weights are those of the best validation epoch, and the test score is theirs.
    val = model.evaluate(split.x_val, split.y_val, batch_size=500, verbose=0, return_dict=True)
    test = model.evaluate(split.x_test, split.y_test, batch_size=500, verbose=0, return_dict=True)
    assert val["fine_outputs_accuracy"] == pytest.approx(result["fine_best_accuracy"], abs=1e-6)
    assert test["fine_outputs_accuracy"] == pytest.approx(result["fine_test_accuracy"], abs=1e-6)
    # The weights file holds the same weights: a fresh build that loads them predicts the same outputs.
    rebuilt = build_model(result["space"])
    rebuilt.optimizer.build(rebuilt.trainable_variables)  # the file has the optimizer's state too
    rebuilt.load_weights(tmp_path / result["weights_file"])
    a, b = model.predict(split.x_test, verbose=0), rebuilt.predict(split.x_test, verbose=0)
    for head in ("fine_outputs", "coarse_outputs"):
        np.testing.assert_allclose(a[head], b[head], rtol=1e-5, atol=1e-6)


HIDE_TENSORFLOW = """
import runpy, sys
class HideTensorFlow:  # an import hook that makes TensorFlow look uninstalled
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, HideTensorFlow())
sys.path.insert(0, ROOT)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path(f"{ROOT}/train.py", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (pip install 'jax[cpu]')")
def test_tensorboard_without_tensorflow_is_one_message_and_training_goes_on(tmp_path):
    """Keras on JAX where TensorFlow is not installed (hidden here): the flag degrades, the run completes."""
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=20)
    (tmp_path / "space.json").write_text(json.dumps(SMALL))
    (tmp_path / "train_without_tf.py").write_text(f"ROOT = {ROOT!r}" + HIDE_TENSORFLOW)
    out = run(str(tmp_path / "train_without_tf.py"), ["--space", "space.json", "--epochs", "2"], tmp_path,
              KERAS_BACKEND="jax")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("TensorBoard logging is off: it needs TensorFlow") == 1
    assert '"keras_backend": "jax"' in out.stdout and not (tmp_path / "TensorBoard").exists()
    [path] = (tmp_path / "results").glob("model_*.txt.json")
    assert os.path.exists(tmp_path / json.loads(path.read_text())["model_file"])


WRONG_TYPES = {  # result file: (what it holds instead of a good result, why the report skips it)
    "model_0.9000_acc.txt.json": ({"fine_best_accuracy": "high"}, "fine_best_accuracy is not a number"),
    "model_0.8000_test.txt.json": ({"fine_test_accuracy": [0.8]}, "fine_test_accuracy is not a number"),
    "model_0.7000_batch.txt.json": ({"space": dict(SMALL, batch_size="32")}, "space.batch_size is not a number"),
    "model_0.6000_list.txt.json": ({"space": [1, 2]}, "space is not an object"),
    "model_0.5000_hist.txt.json": ({"history": {"loss": 3}}, "history.loss is not a list"),
    "model_0.4000_time.txt.json": ({"train_time_s": "1 h"}, "train_time_s is not a number"),
    "model_0.3000_trial.txt.json": ({"trial_id": "3"}, "trial_id is not a whole number"),
    "model_0.2000_name.txt.json": ({"model_name": 5}, "model_name is not a string"),
    "failed_error.txt.json": ({"status": "fail", "error": {"type": "OOM"}}, "error is not a string"),
}


def test_result_files_of_the_wrong_types_are_skipped_with_their_reason(tmp_path, capsys):
    import report

    results = tmp_path / "results"
    results.mkdir()
    good = dict(classic_result(0.5, SMALL, 3), model_name="model_0.5000_good")
    (results / "model_0.5000_good.txt.json").write_text(json.dumps(good))
    for name, (change, _) in WRONG_TYPES.items():
        (results / name).write_text(json.dumps({**good, "model_name": name[:-len(".txt.json")], **change}))
    (results / "model_0.1000_array.txt.json").write_text(json.dumps([good]))

    rows, unreadable = report.read_result_files(str(results))
    assert list(rows) == ["model_0.5000_good"]
    assert sorted(unreadable) == sorted([f"{name} ({why})" for name, (_, why) in WRONG_TYPES.items()]
                                        + ["model_0.1000_array.txt.json (ValueError)"])
    assert report.main(["--results-dir", str(results), "--trials-file", str(tmp_path / "none.pkl")]) == 0
    out = capsys.readouterr().out
    assert "1 models, 1 ok" in out and "10 unreadable result files skipped: " in out


def test_a_trial_that_ran_again_after_a_kill_is_counted_once(tmp_path, capsys):
    """A kill between a trial's result file and the save of results.pkl re-runs the trial on resume: same trial
    id, new model name. The first file is an orphan of that trial; a file whose trial never got saved still counts."""
    import report

    names = iter(["model_0.3000_aaaa", "model_0.4000_bbbb", "model_0.5000_cccc"])

    def objective(hype_space):
        name = next(names)
        return {"status": STATUS_OK, "loss": -float(name[6:12]), "fine_best_accuracy": float(name[6:12]),
                "model_name": name, "space": hype_space}
    trials = Trials()
    fmin(objective, space, algo=rand.suggest, trials=trials, max_evals=3, show_progressbar=False,
         rstate=np.random.default_rng(0))
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(trials))
    results = tmp_path / "results"
    results.mkdir()
    files = {t["result"]["model_name"]: t["tid"] for t in trials.trials}
    files.update({"model_0.9000_dead": 1,  # trial 1's first run, killed before results.pkl was saved
                  "model_0.2000_last": 3})  # trial 3, killed before results.pkl was saved, not resumed
    for name, tid in files.items():
        result = dict(classic_result(float(name[6:12]), SMALL, 3), model_name=name, trial_id=tid)
        (results / f"{name}.txt.json").write_text(json.dumps(result))

    assert report.main(["--results-dir", str(results), "--trials-file", str(tmp_path / "results.pkl")]) == 0
    out = capsys.readouterr().out
    assert "results.pkl: 4 models, 4 ok" in out
    assert ("1 result files of interrupted runs not counted (their trial ran again, saved in the trials): "
            "model_0.9000_dead.txt.json") in out
    assert [(r[1], r[-1]) for r in leaderboard_rows(out)] == [
        ("3", "model_0.5000_cccc"), ("2", "model_0.4000_bbbb"), ("1", "model_0.3000_aaaa"), ("4", "model_0.2000_last")]


def test_stale_temporaries_of_killed_writes_are_removed_and_fresh_ones_kept(tmp_path, capsys):
    import report
    from record import save_result
    from utils import remove_stale_temporaries

    results = tmp_path / "results"
    save_result(dict(classic_result(0.5, SMALL, 3), model_name="model_0.5000_good"), str(results))
    hour_ago = os.path.getmtime(results / "model_0.5000_good.txt.json") - 3600
    for name in (".tmp_hks_k1ll_k1l_model_0.6000_x.txt.json", ".tmp_hks_k2llk2ll_results.pkl",
                 "old_but_not_temporary.txt"):
        (results / name).write_text("half a fi")
        os.utime(results / name, (hour_ago, hour_ago))
    (results / ".tmp_hks_writenow_model.txt.json").write_text("a concurrent writer's")
    assert remove_stale_temporaries(str(results / "absent")) == []
    assert report.main(["--results-dir", str(results), "--trials-file", str(tmp_path / "none.pkl")]) == 0
    out = capsys.readouterr().out
    assert ("Removed 2 temporary files left by writes killed midway: .tmp_hks_k1ll_k1l_model_0.6000_x.txt.json, "
            ".tmp_hks_k2llk2ll_results.pkl") in out
    assert sorted(p.name for p in results.iterdir() if not p.name.endswith(".png")) == [
        ".tmp_hks_writenow_model.txt.json", "model_0.5000_good.txt.json", "old_but_not_temporary.txt"]
    os.utime(results / ".tmp_hks_writenow_model.txt.json", (hour_ago + 3000, hour_ago + 3000))  # 10 minutes ago
    assert remove_stale_temporaries(str(results), older_than_s=300) == [".tmp_hks_writenow_model.txt.json"]


def test_the_best_hyperspace_skips_corrupt_and_badly_named_files(tmp_path, capsys):
    from record import load_best_result

    skipped = {"model_0.9900_cut.txt.json": '{"space": {"batch_size": 3',
               "model_0.9800_nospace.txt.json": json.dumps({"status": "ok", "fine_best_accuracy": 0.98}),
               "model_0.9700_listspace.txt.json": json.dumps({"space": [1, 2]}),
               "model_0.9600_array.txt.json": json.dumps([{"space": SMALL}]),
               "model_high_x.txt.json": json.dumps({"space": SMALL}),
               "model_.txt.json": json.dumps({"space": SMALL}),
               "model_nan_x.txt.json": json.dumps({"space": SMALL})}
    for name, text in skipped.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "model_0.5000_good.txt.json").write_text(json.dumps({"space": SMALL, "model_name": "good"}))
    (tmp_path / "model_0.4000_worse.txt.json").write_text(json.dumps({"space": {}, "model_name": "worse"}))

    assert load_best_result(str(tmp_path))["space"] == SMALL
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(skipped) and all(line.startswith("warning: skipped ") for line in lines)
    assert sorted(next(name for name in skipped if name in line) for line in lines) == sorted(skipped)
    assert load_best_result(str(tmp_path))["model_name"] == "good"
    assert load_best_result(str(tmp_path / "absent")) is None
