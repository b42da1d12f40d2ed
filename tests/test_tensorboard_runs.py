"""Every trial in TensorBoard's HParams dashboard: report.py --tensorboard writes the runs without
TensorFlow, and a real TensorBoard, started here on a free loopback port, lists every trial through
its own HTTP API."""
import contextlib
import itertools
import json
import os
import pickle
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, rand
from hyperopt.pyll import stochastic

from conftest import ROOT, classic_result
from search_space import SPACE, space

# Run a module or script with TensorFlow (or another top-level package) looking uninstalled.
HIDDEN = """
import runpy, sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Hide())
sys.argv = sys.argv[1:]
runpy.run_{how}(sys.argv[0], run_name="__main__")
"""


def run_without(hidden, args, cwd, module=False):
    code = HIDDEN.format(hidden=hidden, how="module" if module else "path")
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT})


def finished(process, timeout=120):
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def history(accuracy, epochs, classic):
    """Per-epoch curves under this repo's Keras 3 names, or the classic repo's Keras 2 ones (acc).
    """
    acc = "acc" if classic else "accuracy"
    curve = [round(accuracy * (e + 1) / epochs, 4) for e in range(epochs)]
    return {"loss": [2.0 - c for c in curve], f"fine_outputs_{acc}": curve,
            f"val_fine_outputs_{acc}": curve,
            f"val_coarse_outputs_{acc}": [c + 0.1 for c in curve],
            "val_loss": [2.1 - c for c in curve]}


def objective_of(rng):
    """Results as this repo's objective writes them, without training: ok, pruned, failed in turn.
    """
    def objective(hype_space):
        i = objective.calls = getattr(objective, "calls", 0) + 1
        if i % 3 == 0:
            return {"status": STATUS_FAIL, "model_name": f"failed_{i}", "space": hype_space,
                    "validation": "split", "error": "ResourceExhaustedError: OOM"}
        accuracy, epochs = round(float(rng.uniform(0.1, 0.6)), 4), 2 if i % 3 == 2 else 4
        return {"status": STATUS_OK, "loss": -accuracy, "fine_best_accuracy": accuracy,
                "coarse_best_accuracy": accuracy + 0.1, "fine_test_accuracy": accuracy - 0.01,
                "coarse_test_accuracy": accuracy + 0.05, "epochs_run": epochs, "epochs_budget": 4,
                "train_time_s": 10.0 * i, "nb_params": 1000 + i, "validation": "split",
                "trial_id": i - 1,
                "model_name": f"model_{accuracy:.4f}_{i:08x}", "space": hype_space,
                "history": history(accuracy, epochs, classic=False),
                **({"pruned": True, "pruned_at_epoch": 2} if epochs == 2 else {})}
    return objective


def small_search(folder, n_trials=5, n_classic=2, seed=0):
    """results/ and results.pkl of a search here (one trial in results.pkl only), and classic result
    files. Returns {model name: result} of every trial."""
    rng = np.random.default_rng(seed)
    trials = Trials()
    if n_trials:
        fmin(objective_of(rng), space, algo=rand.suggest, trials=trials, max_evals=n_trials,
             show_progressbar=False, rstate=np.random.default_rng(seed))
    results = os.path.join(folder, "results")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(folder, "results.pkl"), "wb") as f:
        pickle.dump(trials, f)
    everything = {t["result"]["model_name"]: t["result"] for t in trials.trials}
    for result in list(everything.values())[1:]:  # the first trial is in results.pkl only
        with open(os.path.join(results, result["model_name"] + ".txt.json"), "w") as f:
            json.dump(result, f)
    rng = np.random.default_rng(seed + 1)  # the same classic files, whatever the number of trials
    for i in range(n_classic):
        accuracy = round(float(rng.uniform(0.1, 0.6)), 4)
        name = f"model_{accuracy:.12g}_{i:05x}"
        result = dict(classic_result(accuracy, stochastic.sample(space, rng=rng), 3, name),
                      history=history(accuracy, 3, classic=True))
        with open(os.path.join(results, name + ".txt.json"), "w") as f:
            json.dump(result, f)
        everything[name] = result
    return everything


def expected_hparam(value):
    return 0.0 if value is None else value if isinstance(value, (bool, str)) else float(value)


class TensorBoard:
    """TensorBoard (TensorFlow hidden) on a free port of 127.0.0.1, stopped on exit of the with
    block."""

    def __init__(self, logdir, cwd):
        self.process = run_without("tensorflow", ["tensorboard.main", "--logdir", str(logdir),
                                                  "--host",
                                                  "127.0.0.1", "--port", "0", "--reload_interval",
                                                  "1"], cwd,
                                   module=True)
        self.lines = []

    def __enter__(self):
        deadline = time.time() + 60
        # it prints "TensorBoard 2.20.0 at http://127.0.0.1:PORT/" once serving
        while time.time() < deadline:
            line = self.process.stdout.readline()
            self.lines.append(line)
            if found := re.search(r"at (http://127\.0\.0\.1:\d+)/", line):
                self.url = found.group(1)
                return self
            if not line and self.process.poll() is not None:
                break
        self.__exit__()
        raise AssertionError("TensorBoard did not start: " + "".join(self.lines)[-3000:])

    def __exit__(self, *_):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def post(self, route, request):
        http = urllib.request.Request(self.url + route, data=json.dumps(request).encode(),
                                      method="POST",
                                      headers={"Content-Type": "application/json",
                                               "X-XSRF-Protected": "1"})
        with urllib.request.urlopen(http, timeout=30) as response:
            return json.load(response)

    def get(self, route, **query):
        with urllib.request.urlopen(f"{self.url}{route}?{urllib.parse.urlencode(query)}",
                                    timeout=30) as response:
            return json.load(response)

    def session_groups(self, expected, timeout_s=60):
        """The hparams plugin's session groups, once it lists `expected` of them (it loads the
        logdir in turns)."""
        request = {"experimentName": "",
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                             "STATUS_RUNNING"],
                   "colParams": [], "startIndex": 0, "sliceSize": 1000, "includeMetrics": True}
        deadline = time.time() + timeout_s
        while True:
            groups = self.post("/data/plugin/hparams/session_groups", request)
            if groups.get("totalSize") == expected or time.time() > deadline:
                return groups
            time.sleep(0.5)


def test_the_hparams_dashboard_lists_every_trial_with_its_hyperparameters_and_metrics(tmp_path):
    results = small_search(tmp_path)
    wrote = run_without("tensorflow", [os.path.join(ROOT, "report.py"), "--tensorboard", "tb"],
                        tmp_path)
    code, out = finished(wrote)
    assert code == 0, out[-3000:]
    assert "TensorBoard: wrote 7 runs to tb/" in out and "(0 there already)" in out

    with TensorBoard(tmp_path / "tb", tmp_path) as board:
        groups = board.session_groups(expected=len(results))
        experiment = board.post("/data/plugin/hparams/experiment",
                                {"experimentName": "", "includeMetrics": True})
        curves, best = {}, {}
        for name, result in results.items():
            if result["status"] == STATUS_OK:
                curves[name] = board.get("/data/plugin/scalars/scalars", run=f"{name}/validation",
                                         tag="epoch_fine_outputs_accuracy")
                best[name] = board.get("/data/plugin/scalars/scalars", run=name,
                                       tag="trial/val_fine_accuracy")

    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert set(infos) == {*SPACE, "status", "selected_on"}
    assert infos["optimizer"]["domainDiscrete"] == ["Adam", "Nadam", "RMSprop"]
    assert infos["use_BN"]["domainDiscrete"] == [False, True]
    assert infos["first_conv"]["domainDiscrete"] == [0.0, 3.0, 4.0]  # null (no first conv) is 0
    assert infos["batch_size"]["domainInterval"] == {"minValue": 100.0, "maxValue": 700.0}
    assert infos["one_more_fc"]["domainInterval"]["minValue"] == 0.0
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics == ["trial/val_fine_accuracy", "trial/val_coarse_accuracy",
                       "trial/test_fine_accuracy",
                       "trial/test_coarse_accuracy", "trial/epochs_run", "trial/train_time_s",
                       "trial/parameters"]
    # the classic repo's "val" was the test set
    assert "test set" in experiment["metricInfos"][0]["description"]

    by_name = {g["name"]: g for g in groups["sessionGroups"]}
    assert groups["totalSize"] == len(by_name) == len(results) and set(by_name) == set(results)
    for name, result in results.items():
        group = by_name[name]
        assert {k: group["hparams"][k] for k in SPACE} == pytest.approx(
            {k: expected_hparam(v) for k, v in result["space"].items()}), name
        metric = {m["name"]["tag"][len("trial/"):]: m["value"] for m in group["metricValues"]}
        status = "failed" if result[
            "status"] != STATUS_OK else "pruned" if result.get("pruned") else "ok"
        assert group["hparams"]["status"] == status
        assert group["sessions"][0]["status"] == ("STATUS_FAILURE" if status == "failed"
                                                  else "STATUS_SUCCESS")
        if status == "failed":
            assert metric == {}
            continue
        assert group["hparams"]["selected_on"] == ("split" if "trial_id" in result else "test")
        assert metric["val_fine_accuracy"] == pytest.approx(result["fine_best_accuracy"])
        assert metric["val_coarse_accuracy"] == pytest.approx(result["coarse_best_accuracy"])
        assert metric["epochs_run"] == len(result["history"]["loss"])
        # this repo's results; the classic ones have no test accuracy, time or parameters
        if "trial_id" in result:
            assert metric["test_fine_accuracy"] == pytest.approx(result["fine_test_accuracy"])
            assert (metric["train_time_s"],
                    metric["parameters"]) == (result["train_time_s"], result["nb_params"])
        else:
            assert set(metric) == {"val_fine_accuracy", "val_coarse_accuracy", "epochs_run"}
        key = "val_fine_outputs_accuracy" if "trial_id" in result else "val_fine_outputs_acc"
        assert [point[2] for point in curves[name]] == pytest.approx(result["history"][key])
        assert [point[1] for point in curves[name]] == list(range(len(result["history"][key])))
        # The metric's chart in the dashboard: the best so far after each epoch.
        assert [point[2] for point in best[name]] == pytest.approx(list(itertools.accumulate(
            result["history"][key], max)))


def run_folders(folder):
    return sorted(p for p in os.listdir(folder) if os.path.isdir(os.path.join(folder, p)))


def test_rerun_adds_new_trials_completes_killed_writes_and_rewrites_nothing(tmp_path):
    import report
    import tensorboard_runs
    from utils import load_trials

    def write():  # as report.py --tensorboard does
        rows, _ = report.read_result_files(str(tmp_path / "results"))
        trials = load_trials(str(tmp_path / "results.pkl"), "")
        report.add_trials(trials, rows)
        return tensorboard_runs.write_runs(list(rows.values()), str(tmp_path / "tb"),
                                           tensorboard_runs.trial_results(trials))

    small_search(tmp_path, n_trials=0, n_classic=2)
    assert write() == (2, 0)
    experiment = tmp_path / "tb" / tensorboard_runs.EXPERIMENT_FILE
    listed = tensorboard_runs.Writer(str(tmp_path / "tb")).listed_metrics(str(experiment))
    # Classic results only: the metrics they lack are not listed (the parallel coordinates would
    # drop them all).
    assert listed == {"trial/val_fine_accuracy", "trial/val_coarse_accuracy", "trial/epochs_run"}
    first = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "tb").rglob("*")}

    # A run that a killed write left half done: its curves, a temporary, but no trial file.
    everything = small_search(tmp_path, n_trials=2, n_classic=2)
    [half] = [name for name, result in everything.items() if result.get("trial_id") == 1]
    assert write() == (2, 2)
    os.remove(tmp_path / "tb" / half / tensorboard_runs.TRIAL_FILE)
    # as the writer names them
    stale = tmp_path / "tb" / half / "validation" / ".tmp_hks_killed00_part"
    stale.write_bytes(b"half a record")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    assert write() == (1, 3)
    assert not stale.exists() and (tmp_path / "tb" / half / tensorboard_runs.TRIAL_FILE).exists()
    assert run_folders(tmp_path / "tb") == sorted(everything)
    for path, mtime in first.items():  # the classic runs were not written again
        if path != experiment:
            assert os.stat(path).st_mtime_ns == mtime, path
    listed = tensorboard_runs.Writer(str(tmp_path / "tb")).listed_metrics(str(experiment))
    assert {"trial/test_fine_accuracy", "trial/parameters", "trial/val_fine_accuracy"} <= listed
    assert not list((tmp_path / "tb").rglob(".tmp_*"))


def test_without_the_tensorboard_package_it_is_one_line(tmp_path):
    small_search(tmp_path, n_trials=0, n_classic=1)
    code, out = finished(run_without("tensorboard", [os.path.join(ROOT, "report.py"),
                                                     "--tensorboard", "tb"],
                                     tmp_path))
    assert code == 1
    assert out.strip().splitlines()[
        -1].startswith("error: writing TensorBoard runs needs the tensorboard package")
    assert "pip install tensorboard" in out and "Traceback" not in out


def test_records_are_framed_as_tensorboards_own_writer_frames_them(tmp_path):
    """The C checksum (google-crc32c) where installed, tensorboard's pure-Python one elsewhere: the
    same bytes."""
    import io

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c
    from tensorboard.summary.writer.record_writer import RecordWriter

    import tensorboard_runs
    writer = tensorboard_runs.Writer(str(tmp_path))
    for checksum in {writer.crc32c, crc32c}:
        writer.crc32c = checksum
        for data in (b"", b"abc", bytes(range(256)) * 3):
            expected = io.BytesIO()
            RecordWriter(expected).write(data)
            assert writer.record(data) == expected.getvalue()


def test_the_screenshot_script_says_in_one_line_how_to_get_a_browser(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "hparams_screenshot.py")],
                         cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": str(tmp_path)})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (
        "error: no chromium here: apt-get install chromium (Debian, Ubuntu), then pip install "
                          "playwright\n")


def test_a_mongodb_experiment_gets_its_runs_from_the_trials(tmp_path, capsys):
    """report.py --mongo URL --exp-key NAME --tensorboard: the runs, curves included, come from the
    trials in MongoDB (the result files are on the workers' machines)."""
    import pymongo
    from hyperopt.base import JOB_STATE_DONE

    import mongo_search
    import report
    import tensorboard_runs
    from mongo_standin import MongoStandin

    searched = small_search(tmp_path / "search", n_classic=0)
    results = {name: json.loads(json.dumps(result, default=float))
               for name, result in searched.items()}
    with MongoStandin() as standin:
        url = f"mongo://127.0.0.1:{standin.port}/hks_test/jobs"
        with contextlib.closing(pymongo.MongoClient("127.0.0.1", standin.port)) as client:
            client["hks_test"]["jobs"].insert_many([
                {"exp_key": "exp", "tid": tid, "state": JOB_STATE_DONE, "version": 1, "owner": None,
                 "spec": None,
                 "misc": {"tid": tid, "idxs": {}, "vals": {}, "cmd": None}, "result": result}
                for tid, result in enumerate(results.values())])
        # as report.py --mongo URL --exp-key exp reads them
        trials = mongo_search.connect(url, "exp")
        rows = {}
        report.add_trials(trials, rows)
        tensorboard_runs.write_runs_and_say(list(rows.values()), str(tmp_path / "tb"), trials)
    assert (f"TensorBoard: wrote {len(results)} runs to "
            f"{tmp_path / 'tb'}/") in capsys.readouterr().out
    writer = tensorboard_runs.Writer(str(tmp_path / "tb"))
    for name, result in results.items():
        [hparams] = [v for e in writer.read_events(str(tmp_path / "tb" / name
                                                       / tensorboard_runs.TRIAL_FILE))
                     for v in e.summary.value if v.tag == "_hparams_/session_start_info"]
        assert name.encode() in hparams.metadata.plugin_data.content
        if result["status"] == STATUS_OK:
            curve = [v.simple_value for e in writer.read_events(
                str(tmp_path / "tb" / name / "validation" / tensorboard_runs.CURVES_FILE))
                     for v in e.summary.value if v.tag == "epoch_fine_outputs_accuracy"]
            assert curve == pytest.approx(result["history"]["val_fine_outputs_accuracy"])
