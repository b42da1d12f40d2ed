"""The classic repo's own files: its results/ and results.pkl read, resume and retrain here."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, classic_result, write_classic_search, write_cifar100_archive
from search_space import DEMO_SPACE
from record import describe


def test_a_classic_result_is_described_without_the_new_keys_and_its_val_accuracy_as_on_the_test_set():
    line = describe(classic_result(0.6761, DEMO_SPACE, 100, "model_0.676100010872_6066e"))
    assert line == ("model_0.676100010872_6066e: val fine accuracy 0.6761 (measured on the test set), "
                    "test fine accuracy: not recorded")


@pytest.mark.slow
def test_a_classic_search_resumes_with_every_trial_then_reports_its_best_first(tmp_path):
    best = write_classic_search(tmp_path, 42)
    before = pickle.loads((tmp_path / "results.pkl").read_bytes())
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), "--max-evals", "43",
                          "--epochs", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Found 42 saved trials in results.pkl; 1 more will run" in out.stdout
    assert f"Best so far: {best}: val fine accuracy" in out.stdout and "test fine accuracy: not recorded" in out.stdout
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert len(trials.trials) == 43 and trials.trials[-1]["result"]["status"] == "ok"
    assert [t["result"] for t in trials.trials[:42]] == [t["result"] for t in before.trials]

    report = subprocess.run([sys.executable, os.path.join(ROOT, "report.py")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    lines = report.stdout.splitlines()
    first_row = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"]) + 1]
    assert first_row.split()[0] == "1" and first_row.split()[-1] == best


@pytest.mark.parametrize("pooling", ["inception", "avg"])
def test_train_py_takes_the_space_of_a_classic_result_file(tmp_path, monkeypatch, pooling):
    import train
    from neural_net import build_model

    classic_space = json.loads(json.dumps(dict(DEMO_SPACE, pooling_type=pooling, first_conv=3, one_more_fc=None)))
    name = "model_0.676100010872_6066e"
    (tmp_path / f"{name}.txt.json").write_text(json.dumps(classic_result(0.6761, classic_space, 100, name)))
    assert train.resolve_space(f"{tmp_path}/{name}.txt.json", "results") == classic_space
    (tmp_path / "results").mkdir()
    shutil.copy(tmp_path / f"{name}.txt.json", tmp_path / "results")
    assert train.resolve_space("best", str(tmp_path / "results")) == classic_space
    assert build_model(classic_space).count_params() > 1e6


def test_delete_results_asks_or_takes_y_and_keeps_the_dataset(tmp_path):
    shutil.copy(os.path.join(ROOT, "delete_results.sh"), tmp_path)
    for path in ("results/.gitkeep", "results/model_0.5_x.txt.json", "results.pkl", "TensorBoard/run/events",
                 "ml_req/cifar-100-python.tar.gz"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    no_terminal = subprocess.run(["bash", "delete_results.sh"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True)
    assert no_terminal.returncode == 1 and len(no_terminal.stderr.strip().splitlines()) == 1
    assert "-y" in no_terminal.stderr and (tmp_path / "results.pkl").exists()
    yes = subprocess.run(["bash", "delete_results.sh", "-y"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True)
    assert yes.returncode == 0, yes.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [".gitkeep"]
    assert not (tmp_path / "results.pkl").exists() and not (tmp_path / "TensorBoard").exists()
    assert (tmp_path / "ml_req" / "cifar-100-python.tar.gz").exists()
