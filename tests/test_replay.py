"""bench/replay.py on a hand-made finished search: four result files (two in the classic Keras 2
style), a file without a history, and a trials file giving the order; every figure worked out by
hand below."""
import json
import os
import pickle
import sys

import pytest
from hyperopt import Trials

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import replay  # noqa: E402

# Budget 4 epochs. In the search's order (tids 0-3): A, B, C, D. D starts slowly, ends best (0.75).
CURVES = {"A": [0.2, 0.4, 0.5, 0.6], "B": [0.1, 0.15, 0.17, 0.18], "C": [0.3, 0.5, 0.6, 0.7],
          "D": [0.05, 0.06, 0.3, 0.75]}
TID = {"A": 0, "B": 1, "C": 2, "D": 3}
FILE = {"A": "model_z", "B": "model_c", "C": "model_a", "D": "model_b"}  # another order by name


@pytest.fixture
def search(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name, curve in CURVES.items():
        key = "val_fine_outputs_acc" if name in "AB" else "val_fine_outputs_accuracy"  # Keras 2, 3
        result = {"status": "ok", "model_name": FILE[name], "history": {key: curve}}
        (results / f"{FILE[name]}.txt.json").write_text(json.dumps(result))
    failed = {"status": "fail", "error": "out of memory"}
    (results / "failed_x.txt.json").write_text(json.dumps(failed))
    trials = Trials()
    for name in sorted(CURVES, key=TID.get):
        tid = trials.new_trial_ids(1)[0]
        result = {"status": "ok", "model_name": FILE[name]}
        misc = {"tid": tid, "cmd": None, "idxs": {}, "vals": {}}
        trials.insert_trial_docs(trials.new_trial_docs([tid], [None], [result], [misc]))
    trials.refresh()
    (tmp_path / "results.pkl").write_bytes(pickle.dumps(trials))
    return tmp_path


def test_load_search_reads_both_key_styles_in_the_trials_files_order(search):
    names, curves, order, validation = replay.load_search(str(search / "results"),
                                                          str(search / "results.pkl"))
    assert curves == [CURVES[n] for n in "ABCD"] and order.startswith("the tids of")
    assert validation is None  # C and D recorded no validation_size (A and B: the classic 10,000)
    assert names == [f"{FILE[n]}.txt.json" for n in "ABCD"]  # the failed trial's file has no curve
    names, curves, order, _ = replay.load_search(str(search / "results"))
    assert curves == [CURVES[n] for n in "CDBA"]  # no tids: a stable order
    assert order.startswith("file names")


def test_replay_figures_worked_out_by_hand(search, tmp_path, capsys):
    """Two random orders, seed 0: numpy's default_rng(0) draws C A B D, then D C B A.

    asha (eta 3; rungs 1 and 3): at a rung, the top max(1, n // 3) of the n trials there go on.
      A B C D: A 4 epochs (first); B 0.1 behind A's 0.2 at rung 1: 1; C 0.3 first at rung 1, and at
               rung 3 0.6 against A's 0.5: 4; D 0.05, last at rung 1: 1. 10 of 16 epochs:
               saved 0.375; best found 0.7: regret 0.05.
      C A B D: C 4; A, B, D each behind at rung 1: 1 each. 7 epochs, saved 0.5625, regret 0.05.
      D C B A: D 4; C first at rung 1 (0.3 vs 0.05), at rung 3 (0.6 vs D's 0.3): 4; B 0.1
               behind 0.3, A 0.2 behind 0.3: 1 each. 10 epochs, saved 0.375, best 0.75 found:
               regret 0.
    curve: judged at epoch 3 only (the warm-up; the last epoch saves nothing). Gains of the best so
      far over epochs 2-3 and 1-2: A 0.1 <= 0.2: bound 0.5 + 0.1 * s; B 0.02 <= 0.05: bound
      0.17 + 0.02 * s; C 0.1 <= 0.2: 0.6 + 0.1 * s; D 0.24 > 0.01: speeding up, no bound. With
      s = r (1 - r**log2(4/3)) / (1 - r), r = 1/sqrt(2): s = 0.3235, so A 0.532, B 0.1765, C 0.632.
      A B C D: A 4 (nothing to beat); B 0.1765 < A's 0.6: 3; C 0.632 >= 0.6: 4; D 4. 15 epochs:
               saved 0.0625, regret 0.
      C A B D: C 4; A 0.532 < 0.7: 3; B: 3; D 4. 14: saved 0.125, regret 0.
      D C B A: D 4; C 0.632 < D's 0.75: 3; B 3; A 3. 13: saved 0.1875, regret 0.
    median: 5 trials must run to the end before it judges: it never stops any of these 4.
    """
    assert replay.main([str(search / "results"), "--trials-file", str(search / "results.pkl"),
                        "--orders", "2", "--seed", "0", "--json", str(tmp_path / "out.json")]) == 0
    figures = json.loads((tmp_path / "out.json").read_text())
    assert (figures["trials"], figures["epochs"], figures["best"]) == (4, 16, 0.75)
    rows = {r["rule"]: r for r in figures["rules"]}
    fields = ["saved_in_order", "regret_in_order", "saved_mean", "best_kept", "regret_mean",
              "regret_worst"]
    expected = {"none": [0, 0, 0, 1, 0, 0],
                "median": [0, 0, 0, 1, 0, 0],
                "asha": [0.375, 0.05, (0.5625 + 0.375) / 2, 0.5, 0.025, 0.05],
                "curve": [0.0625, 0, (0.125 + 0.1875) / 2, 1, 0, 0]}
    for rule, values in expected.items():
        assert [rows[rule][f] for f in fields] == pytest.approx(values, abs=1e-4), rule
        assert set(rows[rule]) == {"rule", "default", *fields}
    # Optuna's successive halving at our asha's settings is our asha, step for step; its median
    # pruner too waits for 5 finished trials.
    for theirs, ours in (("optuna SuccessiveHalvingPruner(1, 3)", "asha"),
                         ("optuna MedianPruner(5, 2)", "median")):
        assert [rows[theirs][f] for f in fields] == [rows[ours][f] for f in fields]
    assert "optuna HyperbandPruner(1, 4, 3)" in rows
    # --prune auto: median, as the number of validation images is not known for C and D
    assert [r["rule"] for r in figures["rules"] if r["default"]] == ["median"]
    out = capsys.readouterr().out
    assert "4 trials, 16 epochs, best validation accuracy 0.7500; search order: the tids of" in out
    assert "validation images not recorded: --prune auto is median here." in out


@pytest.mark.parametrize("size, chosen", [(1999, "median"), (2000, "curve")])
def test_the_default_row_is_the_rule_auto_chooses_for_the_searchs_validation_images(
        search, tmp_path, capsys, size, chosen):
    for name in "CD":  # this project's results record how many images selected them
        path = search / "results" / f"{FILE[name]}.txt.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "validation_size": size}))
    assert replay.main([str(search / "results"), "--orders", "1", "--json",
                        str(tmp_path / "o.json")]) == 0
    figures = json.loads((tmp_path / "o.json").read_text())
    assert [r["rule"] for r in figures["rules"] if r["default"]] == [chosen]
    assert f"{size:,} validation images: --prune auto is {chosen} here." in capsys.readouterr().out


def test_a_folder_without_curves_is_one_line_that_says_what_to_give(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        replay.main([str(tmp_path)])
    assert str(exit_.value.code).startswith("error: no result file with a per-epoch validation")
    assert "\n" not in str(exit_.value.code)
