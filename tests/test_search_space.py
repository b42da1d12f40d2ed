import json

import numpy as np
import pytest
from hyperopt.pyll import stochastic

from search_space import CLASSIC_BEST_SPACE, DEMO_SPACE, HyperspaceError, check_hyperspace, space


def test_every_point_the_search_draws_and_the_named_ones_are_in_range():
    rng = np.random.default_rng(0)
    for _ in range(500):
        assert check_hyperspace(stochastic.sample(space, rng)) == []
    assert check_hyperspace(CLASSIC_BEST_SPACE) == [] and check_hyperspace(DEMO_SPACE) == []
    # JSON may write 3.0
    assert check_hyperspace(dict(DEMO_SPACE, first_conv=3.0, nb_conv_pool_layers=2.0)) == []


@pytest.mark.parametrize("bad, named", [
    ([1, 2], "not list"), ("demo", "not str"), (None, "not NoneType"),
    ({k: v for k, v in DEMO_SPACE.items() if k != "activation"}, "lacks activation"),
    (dict(DEMO_SPACE, extra=1), 'unknown "extra"'),
    (dict(DEMO_SPACE, batch_size=0),
     "'batch_size' is 0: the search draws a number from 100 to 700"),
    (dict(DEMO_SPACE, batch_size="320"), "'batch_size' is \"320\""),
    (dict(DEMO_SPACE, lr_rate_mult=-1), "'lr_rate_mult' is -1"),
    (dict(DEMO_SPACE, residual=-1),
     "'residual' is -1: the search draws null or a number from 1 to 4"),
    (dict(DEMO_SPACE, use_BN=1), "'use_BN' is 1: the search draws false or true"),
    (dict(DEMO_SPACE, pooling_type="median"), "'pooling_type' is \"median\""),
    (dict(DEMO_SPACE, conv_dropout_drop_proba=1.0), "'conv_dropout_drop_proba' is 1.0"),
    (dict(DEMO_SPACE, nb_conv_pool_layers=6), "'nb_conv_pool_layers' is 6"),
])
def test_a_hyperspace_that_cannot_train_is_one_line_naming_the_key_and_its_range(bad, named):
    with pytest.raises(HyperspaceError) as e:
        check_hyperspace(bad)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_a_value_outside_the_search_range_that_works_is_a_warning():
    assert check_hyperspace(dict(DEMO_SPACE, batch_size=64.0)) == [
        "batch_size is 64.0, outside the search's range (a number from 100 to 700, a multiple of "
        "5)"]


@pytest.mark.parametrize("content", ["[1, 2]", '"demo"', "null",
                                     json.dumps({"space": dict(DEMO_SPACE, batch_size=0)}),
                                     json.dumps({k: v for k, v in DEMO_SPACE.items()
                                                 if k != "residual"})])
def test_train_py_refuses_a_bad_hyperspace_before_any_work(tmp_path, monkeypatch, content):
    # in-process: sys.exit("error: ...") is what the command line prints, with exit status 1
    import train

    (tmp_path / "space.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        train.main(["--space", "space.json"])
    assert e.value.code.startswith("error: space.json: ") and "\n" not in e.value.code
    assert not (tmp_path / "results").exists()  # no failed_* file: nothing was trained
