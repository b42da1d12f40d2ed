"""Nothing lost, nothing silent: one driver per trials file, unwritable folders found before any training,
a full disk stops with one line saying what was saved, and a stop never leaves a result file of an unsaved trial.

The tests run as root, which writes through chmod, so an unwritable folder is a path under a regular file
(a real error: NotADirectoryError), and a full disk is a write monkeypatched to raise ENOSPC.
"""
import errno
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest

import utils
from conftest import ROOT, write_cifar100_archive, write_classic_search
from test_neural_net import SMALL


def driver(args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def quick_search(tmp_path, monkeypatch):
    """In-process searches in tmp_path whose trials fail at once (no training): they still write result files."""
    import hyperopt_optimize
    import neural_net

    built = []

    def bad_combination(*args, **kwargs):
        built.append(1)
        raise ValueError("this combination cannot be built")
    monkeypatch.setattr(neural_net, "build_model", bad_combination)
    monkeypatch.setattr(hyperopt_optimize, "TRIAL_PROCESS", False)  # the patch above applies in this process only
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    monkeypatch.chdir(tmp_path)

    def search(*args):
        return hyperopt_optimize.run_search(hyperopt_optimize.parse_args(["--epochs", "1", *args]))
    search.built = built
    return search


def saved_trials(folder):
    return pickle.loads((folder / "results.pkl").read_bytes()).trials


def result_names(folder):
    return sorted(p.name for p in (folder / "results").glob("*.txt.json"))


def temporaries(folder):
    return sorted(p.name for p in folder.rglob(".tmp_*"))


def fail_writes(monkeypatch, which, after=0):
    """Make atomic_write run out of space on the paths that which(path) picks, after `after` of them succeeded."""
    real, seen = utils.atomic_write, []

    def atomic_write(path, write, mode="w"):
        if which(str(path)):
            seen.append(path)
            if len(seen) > after:
                def write(f, write=write):  # half a file, then the disk is full
                    f.write(b"{" if "b" in mode else "{")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write, mode)
    monkeypatch.setattr(utils, "atomic_write", atomic_write)


# One driver per trials file


def test_a_second_driver_on_the_same_trials_file_is_refused_and_a_killed_holder_frees_it(tmp_path):
    hold = "import time, utils; lock = utils.trials_lock('results.pkl'); lock.acquire(); print('held', flush=True); "
    holder = subprocess.Popen([sys.executable, "-c", hold + "time.sleep(120)"],
                              cwd=tmp_path, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert holder.stdout.readline().strip() == "held"
        out = driver(["--max-evals", "1"], tmp_path)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "results.pkl" in out.stderr and "--trials-file" in out.stderr and "another search" in out.stderr
        assert not (tmp_path / "results.pkl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crashed driver: the OS drops its flock
        holder.wait()
    out = driver(["--max-evals", "1"], tmp_path)  # no dataset: it gets past the lock, to the missing archive
    assert out.returncode == 1 and "another search" not in out.stderr and "cifar-100-python.tar.gz" in out.stderr


def test_a_search_releases_its_lock(quick_search, tmp_path):
    assert quick_search("--max-evals", "1") == 0
    utils.trials_lock("results.pkl").acquire(timeout=0)


# Unwritable folders: found before any training


@pytest.mark.parametrize("option", ["--results-dir", "--trials-file"])
def test_an_unwritable_results_folder_or_trials_file_is_one_line_before_any_training(quick_search, tmp_path, option):
    (tmp_path / "a_file").write_text("not a folder")
    target = "a_file/results" if option == "--results-dir" else "a_file/results.pkl"
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "1", option, target)
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message and "a_file" in message and option in message
    assert quick_search.built == [] and not (tmp_path / "results.pkl").exists()


def test_train_py_checks_its_results_folder_before_training(tmp_path, monkeypatch):
    import train
    import trial

    monkeypatch.setattr(trial, "train", lambda *a, **k: pytest.fail("trained before checking the folder"))
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--space", "demo", "--epochs", "1", "--results-dir", "a_file/results"])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message and "a_file/results" in message


# A full disk later: one line saying what was saved


def test_a_full_disk_on_a_result_file_stops_with_one_line_and_the_resume_writes_it(quick_search, tmp_path, monkeypatch):
    real = utils.atomic_write
    fail_writes(monkeypatch, lambda path: path.endswith(".txt.json"), after=1)
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "3")
    message = str(exit_.value.code)
    assert "\n" not in message and "No space left on device" in message and "failed_" in message
    assert "2 finished trials are saved in results.pkl" in message and "run the same command again" in message
    assert len(saved_trials(tmp_path)) == 2 and len(result_names(tmp_path)) == 1 and temporaries(tmp_path) == []

    monkeypatch.setattr(utils, "atomic_write", real)  # space freed
    assert quick_search("--max-evals", "2") == 0
    assert result_names(tmp_path) == sorted(t["result"]["model_name"] + ".txt.json" for t in saved_trials(tmp_path))


def test_a_full_disk_on_the_trials_file_stops_with_one_line_and_leaves_no_stray_result(quick_search, tmp_path,
                                                                                         monkeypatch):
    fail_writes(monkeypatch, lambda path: path.endswith("results.pkl"), after=1)
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "3")
    message = str(exit_.value.code)
    assert "\n" not in message and "No space left on device" in message and "results.pkl" in message
    assert "trial 2" in message.lower() and "1 finished trial" in message
    trials = saved_trials(tmp_path)  # the one saved before the disk filled up, intact
    assert len(trials) == 1 and result_names(tmp_path) == [trials[0]["result"]["model_name"] + ".txt.json"]
    assert temporaries(tmp_path) == []


def test_train_py_on_a_full_disk_is_one_line_saying_what_was_saved(tmp_path, monkeypatch):
    import train

    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    (tmp_path / "small.json").write_text(json.dumps(SMALL))
    monkeypatch.chdir(tmp_path)
    fail_writes(monkeypatch, lambda path: path.endswith(".txt.json"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--space", "small.json", "--epochs", "1", "--no-tensorboard"])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message and "No space left on device" in message
    saved = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len(saved) == 2 and saved[0].endswith(".keras") and saved[1] == saved[0][:-6] + ".weights.h5"
    assert all(name in message for name in saved) and temporaries(tmp_path) == []


# The order of the writes: a result file is always of a trial in results.pkl


def test_results_pkl_is_saved_before_each_trials_result_file(quick_search, tmp_path, monkeypatch):
    written, real = [], utils.atomic_write

    def atomic_write(path, write, mode="w"):
        real(path, write, mode)
        if str(path).endswith(".txt.json"):
            written.append(len(saved_trials(tmp_path)) if (tmp_path / "results.pkl").exists() else 0)
    monkeypatch.setattr(utils, "atomic_write", atomic_write)
    assert quick_search("--max-evals", "2") == 0
    assert written == [1, 2]  # when trial n's result file is written, results.pkl already holds n trials


def test_a_stop_between_results_pkl_and_the_result_file_is_repaired_on_resume(quick_search, tmp_path, monkeypatch,
                                                                              capsys):
    real = utils.atomic_write

    def killed(path, write, mode="w"):
        if str(path).endswith(".txt.json"):
            raise KeyboardInterrupt  # Ctrl-C, or a kill, just before the result file is written
        return real(path, write, mode)
    monkeypatch.setattr(utils, "atomic_write", killed)
    assert quick_search("--max-evals", "1") == 130
    assert len(saved_trials(tmp_path)) == 1 and result_names(tmp_path) == []
    monkeypatch.setattr(utils, "atomic_write", real)
    capsys.readouterr()
    assert quick_search("--max-evals", "1") == 0
    name = saved_trials(tmp_path)[0]["result"]["model_name"] + ".txt.json"
    assert result_names(tmp_path) == [name] and name in capsys.readouterr().out


# atomic_write


def test_atomic_write_names_the_file_and_leaves_nothing_when_the_disk_is_full(tmp_path):
    path = tmp_path / "results.pkl"
    path.write_bytes(b"old")

    def write(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as error:
        utils.atomic_write(str(path), write, mode="wb")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.pkl"]


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "r.txt.json"
    utils.atomic_write(str(path), lambda f: f.write("{}"))
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert os.path.basename(events[0][1]).startswith(".tmp_hks_") and events[2][1] == os.path.realpath(tmp_path)
    assert path.read_text() == "{}"


def test_the_driver_removes_temporaries_of_killed_writes_before_it_resumes(tmp_path, monkeypatch, capsys):
    import hyperopt_optimize

    write_classic_search(tmp_path, 1)
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10))
    stale = [tmp_path / ".tmp_hks_abcdefgh_results.pkl",
             tmp_path / "results" / ".tmp_hks_d_efghij_model_0.5_x.txt.json"]
    fresh = tmp_path / "results" / ".tmp_hks_ghijklmn_model_0.6_y.txt.json"  # another writer's, being written now
    for path in [*stale, fresh]:
        path.write_text("half a file")
    for path in stale:
        os.utime(path, (0, 0))  # untouched since 1970: its writer is long gone
    monkeypatch.chdir(tmp_path)
    assert hyperopt_optimize.run_search(hyperopt_optimize.parse_args(["--max-evals", "1", "--epochs", "1"])) == 0
    assert not any(p.exists() for p in stale) and fresh.exists()
    assert "Removed 1 temporary files left in results by writes killed midway" in capsys.readouterr().out
