"""The benchmarks in their quick mode: they run to the end and print their tables (no speed is asserted)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, write_cifar100_archive


def run(command, cwd, **env):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})


def table_rows(stdout, first_column):
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [first_column]]


@pytest.mark.slow
def test_throughput_quick_prints_one_row_per_way(tmp_path):
    out = run([sys.executable, os.path.join(ROOT, "bench", "throughput.py"), "--quick"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "synthetic images" in out.stdout and "Device: CPU" in out.stdout
    assert re.search(r"^way +precision +images/s +vs classic", out.stdout, re.M)
    rows = table_rows(out.stdout, "classic") + table_rows(out.stdout, "project")
    assert [r[:2] for r in rows][:2] == [["classic", "float32"], ["project", "float32"]]
    assert all(float(r[2]) > 0 for r in rows) and rows[0][3] == "1.00x"
    assert "Peak memory: host" in out.stdout


@pytest.mark.slow
def test_search_efficiency_quick_runs_both_searches(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req", train_per_class=20, test_per_class=2)
    out = run([sys.executable, os.path.join(ROOT, "bench", "search_efficiency.py"), "--quick",
               "--data-dir", str(tmp_path / "ml_req"), "--work-dir", str(tmp_path / "work")], tmp_path)
    assert out.returncode == 0, out.stderr
    (none,), (median,) = table_rows(out.stdout, "none"), table_rows(out.stdout, "median")
    assert none[1] == median[1] == "6" and none[2] == "0"  # trials; nothing pruned without pruning
    assert int(none[4]) == 3 * (6 - int(none[3]))  # every finished trial ran its 3 epochs
    assert int(median[4]) <= int(none[4])
    assert "fewer epochs" in out.stdout
    assert (tmp_path / "work" / "median.log").exists() and (tmp_path / "work" / "none" / "results.pkl").exists()


@pytest.mark.slow
def test_gpu_check_quick_runs_on_a_cpu_under_jax(tmp_path):
    pytest.importorskip("jax")
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=60, test_per_class=2)
    out = run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--quick"], tmp_path,
              KERAS_BACKEND="jax", DATA_DIR=str(tmp_path / "ml_req"), RESULTS_DIR=str(tmp_path / "results"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "backend jax" in out.stdout and table_rows(out.stdout, "project")
    assert re.search(r"^epoch 1: [\d.]+ s", out.stdout, re.M)
    assert re.search(r"^\d+ epochs in \d+ s \(float32\); best epoch \d+: val fine accuracy [\d.]+, test fine "
                     r"accuracy [\d.]+", out.stdout, re.M)
    assert len(list((tmp_path / "results").glob("model_*.txt.json"))) == 1
