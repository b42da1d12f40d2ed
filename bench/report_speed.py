"""How long report.py takes on a big search: N result files in the classic format, 100 epochs of
history each.

    python3 bench/report_speed.py              # 3,000 files
    python3 bench/report_speed.py --files 300  # quick

Prints the size of the folder, the time to read it, to draw the figures, the whole command as a user
runs it (Python start and imports included), and the time to write every trial's TensorBoard run
(report.py --tensorboard), again once they are all there, and their size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import report  # noqa: E402
import search_space  # noqa: E402
import tensorboard_runs  # noqa: E402
from hyperopt.pyll import stochastic  # noqa: E402

HEADS = ("fine", "coarse")


def classic_result(rng, name, epochs=100):
    """A result file as the classic repo wrote it after a 100-epoch trial (about 30 KB)."""
    curve = lambda: list(np.sort(rng.uniform(0, 0.7, epochs)))  # noqa: E731
    history = {f"{prefix}{head}_outputs_{m}": curve() for prefix in ("", "val_") for head in HEADS
               for m in ("acc", "loss")}
    history.update(loss=curve(), val_loss=curve())
    accuracy = max(history["val_fine_outputs_acc"])
    space = stochastic.sample(search_space.space, rng)  # a point TPE could have drawn
    result = {"loss": -accuracy, "real_loss": history["val_loss"][-1], "history": history,
              "space": space, "model_name": name, "status": "ok"}
    for head in HEADS:
        acc, loss = history[f"val_{head}_outputs_acc"], history[f"val_{head}_outputs_loss"]
        result.update({f"{head}_best_accuracy": max(acc), f"{head}_best_loss": min(loss),
                       f"{head}_end_accuracy": acc[-1], f"{head}_end_loss": loss[-1]})
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=3000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        results = os.path.join(folder, "results")
        os.makedirs(results)
        for i in range(args.files):
            name = f"model_{rng.uniform(0, 0.7):.12g}_{i:05x}"
            with open(os.path.join(results, name + ".txt.json"), "w") as f:
                json.dump(classic_result(rng, name), f, indent=4, sort_keys=True)
        megabytes = sum(e.stat().st_size for e in os.scandir(results)) / 1e6

        start = time.perf_counter()
        rows, _ = report.read_result_files(results)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        report.write_figures(list(rows.values()), results)
        figures_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "report.py"), "--results-dir", results],
                       cwd=folder, check=True, stdout=subprocess.DEVNULL)
        command_s = time.perf_counter() - start
        runs = os.path.join(folder, "runs")
        start = time.perf_counter()
        tensorboard_runs.write_runs(list(rows.values()), runs)
        runs_s = time.perf_counter() - start
        start = time.perf_counter()
        tensorboard_runs.write_runs(list(rows.values()), runs)  # all there: nothing written again
        again_s = time.perf_counter() - start
        runs_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _,
                      files in os.walk(runs) for f in files) / 1e6

    print(f"{'result files':>14} {'MB':>6} {'read s':>7} {'figures s':>10} {'report.py s':>12} "
          f"{'TB runs s':>10} {'again s':>8} {'runs MB':>8}")
    print(
        f"{args.files:>14} {megabytes:>6.0f} {read_s:>7.2f} {figures_s:>10.2f} {command_s:>12.2f} "
          f"{runs_s:>10.2f} {again_s:>8.2f} {runs_mb:>8.0f}")


if __name__ == "__main__":
    main()
