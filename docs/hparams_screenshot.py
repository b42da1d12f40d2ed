"""A screenshot of TensorBoard's HParams parallel coordinates for a search, taken in a headless
browser.

    python3 docs/hparams_screenshot.py --results-dir CLASSIC/results \
        --trials-file CLASSIC/results.pkl

It writes the runs of the results and trials (report.py --tensorboard) into a temporary folder,
serves them with TensorBoard on a free port of 127.0.0.1, opens the HParams dashboard in Debian's
chromium driven by Playwright (pip install playwright: no browser is downloaded), shows the 19
hyperparameters and the metrics in the parallel coordinates view, and saves the page as a PNG.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import report  # noqa: E402
import tensorboard_runs  # noqa: E402
from search_space import SPACE  # noqa: E402
from utils import atomic_file, load_trials  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def start_tensorboard(logdir, log, timeout_s=120):
    """TensorBoard on a free port of 127.0.0.1: (process, its URL)."""
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                                "--host", "127.0.0.1", "--port", "0"],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None:
        with open(log.name) as f:
            if found := re.search(r"at (http://127\.0\.0\.1:\d+)/", f.read()):
                return process, found.group(1)
        time.sleep(0.5)
    stop(process)
    with open(log.name) as f:
        raise RuntimeError(f"TensorBoard did not start: {f.read()[-2000:]}")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_trials(url, expected, timeout_s=120):
    """Until the hparams plugin lists `expected` trials (TensorBoard loads the runs in turns)."""
    request = json.dumps({"experimentName": "", "startIndex": 0, "sliceSize": 100000,
                          "colParams": [], "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                               "STATUS_FAILURE", "STATUS_RUNNING"]
                          }).encode()
    deadline = time.time() + timeout_s
    while True:
        post = urllib.request.Request(url + "/data/plugin/hparams/session_groups", data=request,
                                      method="POST",
                                      headers={"Content-Type": "application/json",
                                               "X-XSRF-Protected": "1"})
        with urllib.request.urlopen(post, timeout=30) as response:
            listed = json.load(response)["totalSize"]
        if listed >= expected or time.time() > deadline:
            return listed
        time.sleep(1)


def screenshot(browser, url, path, expected_lines, width, height):
    """The parallel coordinates view with every hyperparameter of the space shown; returns the lines
    drawn."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": width, "height": height})
            page.goto(url + "/#hparams")
            page.get_by_text("PARALLEL COORDINATES VIEW").click(timeout=60000)
            for key in SPACE:  # TensorBoard shows the first five hyperparameters only
                box = page.locator("paper-checkbox", has_text=re.compile(f"^\\s*{key}\\s*$"))
                if box.get_attribute("aria-checked", timeout=30000) != "true":
                    box.click()
            lines = page.locator("tf-hparams-parallel-coords-plot svg g.foreground path")
            deadline = time.time() + 60
            while lines.count() < expected_lines and time.time() < deadline:
                time.sleep(0.5)
            # the list of hyperparameters
            page.locator("paper-checkbox").first.scroll_into_view_if_needed()
            time.sleep(2)  # the last axes' transitions
            plot = page.locator("tf-hparams-parallel-coords-plot").bounding_box()
            # down to the plot: below it is empty until a trial is clicked
            with atomic_file(path) as tmp:
                page.screenshot(path=tmp, type="png",
                                clip={"x": 0, "y": 0, "width": width,
                                      "height": plot["y"] + plot["height"] + 10})
                # a quarter of the size, same look
                Image.open(tmp).quantize(256).save(tmp, format="png")
            return lines.count()
        finally:
            chromium.close()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--trials-file", default="results.pkl")
    p.add_argument("--out", default=os.path.join("docs", "hparams_parallel_coordinates.png"))
    p.add_argument("--width", type=int, default=3000,
                   help="window width in pixels (default %(default)s)")
    p.add_argument("--height", type=int, default=1100,
                   help="window height in pixels (default %(default)s)")
    args = p.parse_args()
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        sys.exit("error: no chromium here: apt-get install chromium (Debian, Ubuntu), then pip "
                 "install playwright")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        sys.exit(f"error: pip install playwright (it drives {browser}; nothing else is downloaded)")

    rows, _ = report.read_result_files(args.results_dir)
    trials = (load_trials(args.trials_file, "pass --trials-file")
              if os.path.exists(args.trials_file) else None)
    if trials is not None:
        report.add_trials(trials, rows)
    rows = list(rows.values())
    if not rows:
        sys.exit(f"error: no results in {args.results_dir}/: pass --results-dir")
    drawable = sum(r["status"] != "failed" for r in rows)  # a failed trial has no metric to draw
    with (tempfile.TemporaryDirectory() as logdir,
          open(os.path.join(logdir, "tensorboard.log"), "w") as log):
        tensorboard_runs.write_runs(rows, os.path.join(logdir, "runs"),
                                    tensorboard_runs.trial_results(trials))
        process, url = start_tensorboard(os.path.join(logdir, "runs"), log)
        try:
            listed = wait_for_trials(url, len(rows))
            drawn = screenshot(browser, url, args.out, drawable, args.width, args.height)
        finally:
            stop(process)
    print(f"{args.out}: TensorBoard lists {listed} of {len(rows)} trials; the parallel coordinates "
          f"draw {drawn} ({drawable} have metrics)")


if __name__ == "__main__":
    main()
