"""The benchmarks in their quick mode: they run to the end and print their tables (no speed is
asserted)."""
import os
import pickle
import re
import statistics
import subprocess
import sys

import pytest
from hyperopt import STATUS_OK

from conftest import QUICK_SEED, ROOT, write_cifar100_archive
from pruning import PRUNE_MIN_TRIALS, curve_bound, prune_warmup


def run(command, cwd, **env):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})


def table_rows(stdout, first_column):
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [first_column]]


@pytest.mark.slow
def test_search_efficiency_quick_runs_every_rule_and_replays_them(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req", train_per_class=5, test_per_class=2)
    out = run([sys.executable, os.path.join(ROOT, "bench", "search_efficiency.py"), "--quick",
               "--seed", QUICK_SEED, "--data-dir", str(tmp_path / "ml_req"),
               "--work-dir", str(tmp_path / "work")], tmp_path)
    assert out.returncode == 0, out.stderr
    # the real runs' table (the replay's follows)
    runs = out.stdout.split("Replay on the none search's curves")[0]
    (none,), (median,), (curve,) = (table_rows(runs, rule) for rule in ("none", "median", "curve"))
    # trials; nothing pruned without pruning
    assert none[1] == median[1] == curve[1] == "6" and none[2] == "0"
    assert int(none[4]) == 4 * (6 - int(none[3]))  # every finished trial ran its 4 epochs
    assert int(median[4]) <= int(none[4]) and int(curve[4]) <= int(none[4])
    assert all(0 <= float(row[8]) <= 1 for row in (none, median, curve))  # test accuracy
    assert "median: " in out.stdout and "curve: " in out.stdout and "fewer epochs" in out.stdout
    assert (tmp_path / "work" / "curve.log").exists()
    assert (tmp_path / "work" / "none" / "results.pkl").exists()
    # The replay table: every rule, ours and Optuna's at the same settings; the replays of the real
    # runs match them.
    replayed = [line
                for line in out.stdout.split("Replay on the none search's curves")[1].splitlines()
                if line.startswith(("median (ours)", "median, pruned", "asha (ours", "curve (ours)",
                                    "optuna "))]
    assert len(replayed) == 7
    assert [line.split(")")[0] for line in replayed if line.startswith("optuna ")] == [
        "optuna MedianPruner(5, 2", "optuna SuccessiveHalvingPruner(1, 3",
        "optuna HyperbandPruner(1, 4, 3"]
    checks = [line for line in out.stdout.splitlines()
              if line.startswith(("median: replayed", "curve: replayed"))]
    assert len(checks) == 4 and all("(same:" in line for line in checks), checks
    # The pruned searches, trial by trial.
    for rule in ("median", "curve"):
        trials = pickle.loads((tmp_path / "work" / rule / "results.pkl").read_bytes()).trials
        for k, trial in enumerate(trials):
            result = trial["result"]
            if result["status"] != STATUS_OK:
                continue
            accuracy = result["history"]["val_fine_outputs_accuracy"]
            earlier = [t["result"] for t in trials[:k] if t["result"]["status"] == STATUS_OK]
            history = [r["history"]["val_fine_outputs_accuracy"] for r in earlier
                       if rule == "curve" or not r["pruned"]]
            stop_at = None
            # the last epoch is never judged
            for epoch in range(prune_warmup(4) if rule == "median" else 3, 4):
                if rule == "median":  # against the trials run to the end, at the same epoch
                    reached = [max(h[:epoch]) for h in history if len(h) >= epoch]
                    behind = (len(reached) >= PRUNE_MIN_TRIALS
                              and max(accuracy[:epoch]) < statistics.median(reached))
                else:  # its projection against the best any trial reached
                    bound = curve_bound(accuracy[:epoch], 4)
                    behind = (bound is not None and bool(history)
                              and bound < max(max(h) for h in history))
                if behind:
                    stop_at = epoch
                    break
            behind = stop_at is not None
            assert result["pruned"] == behind, (rule, k)
            assert result["epochs_run"] == (stop_at if behind else 4), (rule, k)


@pytest.mark.slow
def test_gpu_check_quick_runs_throughput_and_training_on_a_cpu_under_jax(tmp_path):
    pytest.importorskip("jax")
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=60,
                           test_per_class=2)
    out = run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--quick"], tmp_path,
              KERAS_BACKEND="jax", DATA_DIR=str(tmp_path / "ml_req"),
              RESULTS_DIR=str(tmp_path / "results"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "backend jax" in out.stdout
    # bench/throughput.py --quick, run by the script: one row per way, on synthetic images (no
    # archive there).
    assert "synthetic images" in out.stdout
    assert re.search(r"^way +precision +images/s +vs classic", out.stdout, re.M)
    rows = table_rows(out.stdout, "classic") + table_rows(out.stdout, "project")
    assert [r[:2] for r in rows][:2] == [["classic", "float32"], ["project", "float32"]]
    assert all(float(r[2]) > 0 for r in rows) and rows[0][3] == "1.00x"
    assert "Peak memory: host" in out.stdout
    assert re.search(r"^epoch 1: [\d.]+ s", out.stdout, re.M)
    assert re.search(
        r"^\d+ epochs in \d+ s \(float32\); best epoch \d+: val fine accuracy [\d.]+, test fine "
                     r"accuracy [\d.]+", out.stdout, re.M)
    assert len(list((tmp_path / "results").glob("model_*.txt.json"))) == 1
