"""Nothing lost, nothing silent in a local search, second round: Ctrl-C at any moment, only this
project's temporaries removed, a resume that would mix two searches refused, no silent wrong result,
no traceback on a bad file.
"""
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
from hyperopt import STATUS_FAIL, Trials, fmin, tpe

import utils
from conftest import (QUICK_SEED, ROOT, SMALL, classic_result, result_names, saved_trials,
                      write_cifar100_archive, write_classic_search)


def one_line_exit(exit_info):
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


# Only this project's temporaries are removed


def test_a_users_old_tmp_file_survives_and_only_the_projects_temporaries_are_removed(tmp_path):
    # the name every atomic write uses
    with utils.atomic_file(str(tmp_path / "results.pkl")) as tmp:
        ours = os.path.basename(tmp)
        open(tmp, "w").write("half a file")
        # a killed write's leftover, same pattern
        os.link(tmp, tmp_path / ours.replace("results", "killed"))
    # the last: not the full pattern
    users = [".tmp_notes", ".tmp_abcdefghresults.pkl", ".tmp_hks_notes"]
    for name in users:
        (tmp_path / name).write_text("a user's")
    for path in tmp_path.iterdir():
        os.utime(path, (0, 0))  # untouched since 1970
    assert utils.remove_stale_temporaries(str(tmp_path)) == [ours.replace("results", "killed")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*users, "results.pkl"])


# Settings that give the trials their meaning stay the same on resume


@pytest.mark.parametrize("option, first, then", [("--dataset", "cifar100", "cifar10"),
                                                 ("--validation", "split", "test"),
                                                 ("--epochs", "1", "2"),
                                                 ("--train-subset", "20", "10")])
def test_a_resume_with_another_meaning_of_the_trials_is_refused_in_one_line(
        quick_search, tmp_path, option, first,
                                                                           then):
    assert quick_search("--max-evals", "1", option, first) == 0
    before = (tmp_path / "results.pkl").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "2", option, then)
    message = one_line_exit(exit_)
    assert f"{option} {first} (not {then})" in message and "--trials-file" in message
    assert (tmp_path / "results.pkl").read_bytes() == before and quick_search.built == [1]


def test_what_may_change_on_resume_is_accepted(quick_search, tmp_path):
    assert quick_search("--max-evals", "1") == 0
    assert quick_search("--max-evals", "2", "--results-dir", "other", "--seed", "5", "--precision",
                        "float32") == 0
    assert len(saved_trials(tmp_path)) == 2


def test_a_resume_in_another_search_space_is_refused(quick_search, tmp_path, monkeypatch):
    import hyperopt_optimize
    from search_space import Range

    assert quick_search("--max-evals", "1") == 0
    monkeypatch.setitem(hyperopt_optimize.SPACE, "batch_size",
                        Range("quniform", "batch_size", 100, 900, 5))
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "2")
    assert "another search space" in one_line_exit(exit_)


def test_trials_saved_without_settings_are_checked_against_what_their_results_recorded(
        quick_search, tmp_path):
    assert quick_search("--max-evals", "1", "--epochs", "1") == 0
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    trials.attachments.clear()  # as an older version saved them
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(trials))
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "2", "--epochs", "3")
    assert "--epochs 1 (not 3)" in one_line_exit(exit_)


def test_the_classic_results_pkl_stays_resumable_and_gets_the_settings(quick_search, tmp_path):
    write_classic_search(tmp_path, 2)
    assert quick_search("--max-evals", "3", "--epochs", "7") == 0
    trials = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert len(trials.trials) == 3 and json.loads(trials.attachments["hks_settings"])["epochs"] == 7


# Silent wrong results


def test_an_infinite_loss_is_a_failed_trial_with_its_reason(tmp_path):
    from settings import Settings
    from trial import run_trial

    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=10)
    settings = Settings(epochs=1, data_dir=str(tmp_path / "ml_req"),
                        results_dir=str(tmp_path / "results"))
    result, _ = run_trial(dict(SMALL, l2_weight_reg_mult=1e40), settings)
    assert result["status"] == STATUS_FAIL and "infinite" in result["error"], result
    assert utils.non_finite(result) is None  # the failed result holds no Infinity either


def test_a_result_with_a_non_finite_number_anywhere_is_found():
    assert utils.non_finite({"loss": -0.5,
                             "history": {"val_loss": [1.0, float("inf")]}}) == "history.val_loss[1]"
    assert utils.non_finite({"real_loss": float("nan")}) == "real_loss"
    assert utils.non_finite({"loss": -0.5, "space": {"residual": None}}) is None


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_outside_what_numpy_takes_is_a_usage_error(seed, capsys):
    import hyperopt_optimize

    with pytest.raises(SystemExit) as exit_:
        hyperopt_optimize.parse_args(["--seed", seed])
    assert exit_.value.code == 2 and "from 0 to 4294967295" in capsys.readouterr().err


def test_tensorboard_with_a_file_in_the_way_is_one_line_before_training(quick_search, tmp_path):
    (tmp_path / "TensorBoard").write_text("a file")
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "1", "--tensorboard")
    message = one_line_exit(exit_)
    assert ("TensorBoard is a file" in message and "--no-tensorboard" in message
            and quick_search.built == [])


def test_a_symlinked_results_pkl_is_written_through_to_its_target(quick_search, tmp_path):
    (tmp_path / "store").mkdir()
    os.symlink("store/search.pkl", tmp_path / "results.pkl")
    assert quick_search("--max-evals", "1") == 0
    assert os.path.islink(tmp_path / "results.pkl")
    assert len(pickle.loads((tmp_path / "store" / "search.pkl").read_bytes()).trials) == 1


def test_a_symlinked_lock_file_is_one_line(quick_search, tmp_path):
    os.symlink("elsewhere", tmp_path / "results.pkl.lock")
    with pytest.raises(SystemExit) as exit_:
        quick_search("--max-evals", "1")
    message = one_line_exit(exit_)
    assert "results.pkl.lock is a symbolic link" in message and quick_search.built == []


def test_a_run_whose_trials_all_fail_the_same_way_stops_and_says_so(
        quick_search, tmp_path, capsys, monkeypatch):
    import neural_net

    def bad_setup(*args, **kwargs):
        if len(quick_search.built) == 10:
            raise KeyboardInterrupt  # the user gives up: a search that did not stop by itself
        quick_search.built.append(1)
        raise ValueError("this combination cannot be built")
    monkeypatch.setattr(neural_net, "build_model", bad_setup)
    assert quick_search() == 1  # no --max-evals: it would fail until Ctrl-C
    err = capsys.readouterr().err
    assert "first 3 trials of this run all failed with ValueError" in err and "setup" in err
    assert len(saved_trials(tmp_path)) == 3


def test_a_short_run_whose_trials_all_failed_says_so(quick_search, capsys):
    assert quick_search("--max-evals", "2") == 0
    assert "every trial of this run failed (2)" in capsys.readouterr().err


# Bad files: one line, no traceback


def write_bad_results(results):
    results.mkdir(parents=True, exist_ok=True)
    good = classic_result(0.5, SMALL, 3, "model_0.5000_good")
    (results / "model_0.5000_good.txt.json").write_text(json.dumps(good))
    (results
     / "model_0.9000_inf.txt.json").write_text(
         json.dumps(dict(good, fine_best_accuracy=float("inf"))))
    (results
     / "model_0.8000_big.txt.json").write_text(json.dumps(dict(good, fine_best_accuracy=1e308)))
    (results / "model_0.7000_deep.txt.json").write_text("[" * 200_000 + "]" * 200_000)


def test_the_report_skips_result_files_with_infinity_huge_numbers_or_deep_nesting(tmp_path, capsys):
    import report

    write_bad_results(tmp_path / "results")
    assert report.main(["--results-dir", str(tmp_path / "results"), "--trials-file",
                        "none.pkl"]) == 0
    out = capsys.readouterr().out
    assert "3 unreadable result files skipped" in out and "1 models" in out
    assert "Best: " + str(tmp_path / "results" / "model_0.5000_good.txt.json") in out


def test_train_py_on_a_file_with_a_huge_number_or_deep_nesting_is_one_line(tmp_path, monkeypatch):
    import train
    from search_space import CLASSIC_BEST_SPACE

    monkeypatch.chdir(tmp_path)
    write_bad_results(tmp_path / "results")
    (tmp_path / "huge.json").write_text(json.dumps(dict(CLASSIC_BEST_SPACE, fc_units_1_mult=1e308)))
    for space in ["results/model_0.7000_deep.txt.json", "results/model_0.9000_inf.txt.json",
                  "huge.json"]:
        with pytest.raises(SystemExit) as exit_:
            train.main(["--space", space])
        assert space in one_line_exit(exit_)


def test_train_py_reads_no_more_than_a_hyperspace_can_be(tmp_path):
    import train

    start = time.time()
    with pytest.raises(SystemExit) as exit_:
        train.main(["--space", "/dev/zero", "--results-dir", str(tmp_path)])
    assert "larger than 16 MB" in one_line_exit(exit_) and time.time() - start < 30


def test_unknown_hyperspace_keys_are_escaped_and_cut_short(tmp_path):
    import train
    from search_space import CLASSIC_BEST_SPACE

    path = tmp_path / "space.json"
    path.write_text(json.dumps({**CLASSIC_BEST_SPACE, "\x1b[2J\x1b[31mred": 1,
                                **{f"k{i}": 1 for i in range(100_000)}}))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--space", str(path)])
    message = str(exit_.value.code)
    # checked first: pytest's diff of 1 MB takes minutes
    assert len(message) < 500, f"{len(message)} characters"
    assert "\x1b" not in message and "\\u001b[2J" in message and "and 99996 more" in message
    one_line_exit(exit_)


@pytest.mark.parametrize("blocker", ["folder", "read-only"])
def test_a_picture_the_report_cannot_write_is_one_line_after_the_leaderboard(
        tmp_path, capsys, monkeypatch, blocker):
    import report

    results = tmp_path / "results"
    write_bad_results(results)
    if blocker == "folder":
        (results / "search_history.png").mkdir()
    # the tests run as root, who writes through chmod: a read-only folder is a write that raises
    # EROFS
    else:
        real = utils.atomic_file

        def read_only(path):
            if path.endswith(".png"):
                raise OSError(30, "Read-only file system", path)
            return real(path)
        monkeypatch.setattr(report, "atomic_file", read_only)
    assert report.main(["--results-dir", str(results), "--trials-file", "none.pkl"]) == 1
    out, err = capsys.readouterr()
    assert "model_0.5000_good" in out and "Traceback" not in err  # the leaderboard
    lines = err.strip().splitlines()
    assert all(line.startswith("warning: could not write ") for line in lines)
    assert str(results
               / "search_history.png") in lines[
                   -1] and len(lines) == (1 if blocker == "folder" else 3)
    assert ("Wrote "
            + str(results / "hyperparameters_scatter_matrix.png") in out) == (blocker == "folder")


def test_a_resume_of_trials_whose_results_lack_model_name_goes_on(quick_search, tmp_path):
    from search_space import space

    trials = Trials()
    fmin(lambda s: {"loss": -0.3, "status": "ok", "space": s}, space, algo=tpe.suggest, max_evals=2,
         trials=trials, show_progressbar=False)
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(trials))
    assert quick_search("--max-evals", "4") == 0
    assert len(saved_trials(tmp_path)) == 4


# Ctrl-C: the search stops with its saved trials, never a failed trial


def interrupt_then(what):
    """A model build that gets Ctrl-C, then does `what` with it, as libraries do, and fails."""
    def build_model(*args, **kwargs):
        # the signal lands in a garbage-collection callback, where Python only prints it
        if what == "gc":
            def callback(phase, info):
                if phase == "start":
                    gc.callbacks.remove(callback)
                    signal.raise_signal(signal.SIGINT)
            gc.callbacks.append(callback)
            gc.collect()
        else:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:  # Keras tracing a layer's call turns it into a TypeError
                raise TypeError("RandomFlip.call() got an unexpected keyword argument") from None
        raise ValueError("this combination cannot be built")
    return build_model


@pytest.mark.parametrize("what", ["gc", "converted"])
def test_ctrl_c_during_set_up_stops_the_search_and_is_never_a_failed_trial(
        quick_search, tmp_path, monkeypatch, capsys, what):
    import neural_net

    # Python's own handler, whatever an earlier test in this process left (conftest restores it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert quick_search("--max-evals", "1") == 0
    monkeypatch.setattr(neural_net, "build_model", interrupt_then(what))
    assert quick_search("--max-evals", "3") == 130
    assert "Interrupted. The 1 finished trials are saved in results.pkl" in capsys.readouterr().out
    assert len(saved_trials(tmp_path)) == 1 and len(result_names(tmp_path)) == 1
    # the search put Python's handler back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def start_driver(tmp_path, *args):
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=10)
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "hyperopt_optimize.py"), "--epochs",
                             "30", "--seed", QUICK_SEED, "--max-evals", "3", "--validation", "test",
                             "--prune", "none", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(process, marker):
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(marker):
            return lines
    pytest.fail(f"no {marker!r} line: {''.join(lines)}")


@pytest.mark.slow
@pytest.mark.parametrize("moment, signals", [("Hyperspace:", 1), ("Hyperspace:", 3),
                                             ("Epoch 2/", 1), ("Epoch 2/", 3)])
def test_real_ctrl_c_at_set_up_or_training_stops_cleanly(tmp_path, moment, signals):
    process = start_driver(tmp_path)
    try:
        wait_for(process, moment)
        for _ in range(signals):
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Interrupted. The 0 finished trials are saved in results.pkl" in out
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert not (tmp_path
                / "results.pkl").exists() and not list((tmp_path / "results").glob("*.txt.json"))


# A process per trial


@pytest.mark.slow
def test_a_function_in_its_own_process_returns_its_value_and_a_killed_one_is_one_line():
    import trial_process

    assert trial_process.call_in_process(max, 3, 5) == 5
    with pytest.raises(trial_process.ProcessDied, match=r"killed by signal 9 \(out of memory\?\)"):
        trial_process.call_in_process(signal.raise_signal, signal.SIGKILL)
