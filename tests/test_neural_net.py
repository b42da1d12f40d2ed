import json

import numpy as np
import pytest
from hyperopt import STATUS_FAIL, STATUS_OK
from hyperopt.pyll import stochastic

from conftest import write_cifar100_archive
from neural_net import build_model
from record import save_result
from search_space import CLASSIC_BEST_SPACE, DEMO_SPACE, space
from settings import Settings
from trial import run_trial

SMALL = dict(CLASSIC_BEST_SPACE, conv_hiddn_units_mult=0.3, fc_units_1_mult=0.2, residual=None, first_conv=None,
             nb_conv_pool_layers=2, pooling_type="max", batch_size=64.0)

# Together these cover every value of every architecture key at least once.
CASES = [
    dict(pooling_type="max", residual=None, first_conv=None, nb_conv_pool_layers=2, use_BN=False, one_more_fc=None),
    dict(pooling_type="avg", residual=1.0, first_conv=3, nb_conv_pool_layers=3, use_BN=True, one_more_fc=0.6),
    dict(pooling_type="all_conv", residual=2.0, first_conv=4, nb_conv_pool_layers=2, use_BN=True, one_more_fc=None,
         conv_pool_res_start_idx=1.0),
    dict(pooling_type="all_conv", residual=3.0, first_conv=None, nb_conv_pool_layers=3, use_BN=False,
         one_more_fc=0.6, activation="relu", conv_kernel_size=2.0, res_conv_kernel_size=4.0),
    dict(pooling_type="inception", residual=4.0, first_conv=3, nb_conv_pool_layers=3, use_BN=False, one_more_fc=None,
         conv_pool_res_start_idx=2.0, conv_kernel_size=4.0, res_conv_kernel_size=3.0),
    dict(pooling_type="inception", residual=None, first_conv=4, nb_conv_pool_layers=2, use_BN=True, one_more_fc=0.6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_architecture_choice_builds_and_predicts_both_heads(case):
    model = build_model(dict(SMALL, **case))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = model.predict(images, verbose=0)
    assert out["fine_outputs"].shape == (3, 100) and out["coarse_outputs"].shape == (3, 20)
    np.testing.assert_allclose(out["fine_outputs"].sum(axis=1), 1.0, rtol=1e-4)  # softmax


def test_demo_and_classic_best_hyperspaces_build():
    assert build_model(DEMO_SPACE).count_params() > 1e6
    assert round(build_model(CLASSIC_BEST_SPACE).count_params() / 1e6, 2) == 7.06


def test_fifty_random_points_of_the_space_build():
    rng = np.random.default_rng(0)
    for _ in range(50):
        point = stochastic.sample(space, rng=rng)
        model = build_model(point)
        heads = {name: out.shape[-1] for name, out in zip(model.output_names, model.outputs)}
        assert heads == {"fine_outputs": 100, "coarse_outputs": 20}


def test_one_and_two_heads_log_the_same_fine_names():
    """Keras 3 drops the output's name from a single-output model's logs (val_accuracy) and logs no loss of
    its own for it: every reader of the fine metrics (KeepBestWeights, pruning, the result keys) would miss them."""
    import keras

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    names = {}
    for nb_coarse in (20, 0):
        model = build_model(SMALL, 100, nb_coarse)
        y = {"fine_outputs": rng.integers(0, 100, 8), "coarse_outputs": rng.integers(0, 20, 8)}
        y = {k: v for k, v in y.items() if k in model.output_names}
        logs = model.fit(images, y, validation_data=(images, y), epochs=1, verbose=0).history
        names[nb_coarse] = {k for k in logs if "coarse" not in k}
        assert set(model.evaluate(images, y, verbose=0, return_dict=True)) == {k[4:] for k in logs if k[:4] == "val_"}
        keras.backend.clear_session()
    assert names[0] == names[20]
    assert {"val_fine_outputs_accuracy", "val_fine_outputs_loss", "val_loss"} <= names[0]


def test_flip_is_training_only():
    import keras

    model = build_model(SMALL)
    flip = next(layer for layer in model.layers if isinstance(layer, keras.layers.RandomFlip))
    images = np.random.default_rng(1).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    mirrored = images[:, :, ::-1]
    seen = np.array([[np.array_equal(out[i], mirrored[i]) for i in range(len(images))]
                     for out in (keras.ops.convert_to_numpy(flip(images, training=True)) for _ in range(3))])
    assert seen.any() and not seen.all()  # in training, a random half of the images is mirrored left-right
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(flip(images, training=False)), images)
    pixels = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a = model.predict(pixels, verbose=0)["fine_outputs"]
    b = model.predict(pixels, verbose=0)["fine_outputs"]
    np.testing.assert_array_equal(a, b)  # inference is deterministic: no flip, no dropout


def test_one_short_trial_learns_easy_classes(tmp_path):
    data_dir = tmp_path / "ml_req"
    write_cifar100_archive(data_dir, classes=range(10), train_per_class=60, test_per_class=10)
    settings = Settings(epochs=2, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    result, _ = run_trial(dict(SMALL, batch_size=32.0, lr_rate_mult=1.0), settings)
    save_result(result, settings.results_dir)
    assert result["status"] == STATUS_OK, result.get("error")
    assert result["fine_best_accuracy"] > 0.5  # 10 classes present: chance is 0.1
    assert result["loss"] == -result["fine_best_accuracy"]
    assert result["fine_test_accuracy"] > 0.5
    written = json.loads((tmp_path / "results" / (result["model_name"] + ".txt.json")).read_text())
    assert written["fine_best_accuracy"] == result["fine_best_accuracy"]


def test_a_diverging_trial_is_recorded_as_failed_with_its_reason(tmp_path):
    data_dir = tmp_path / "ml_req"
    write_cifar100_archive(data_dir, classes=range(10), train_per_class=20)
    settings = Settings(epochs=2, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    result, model = run_trial(dict(SMALL, lr_rate_mult=1e9, use_BN=False), settings)
    save_result(result, settings.results_dir)
    assert result["status"] == STATUS_FAIL and model is None
    assert "NaN" in result["error"] and "Traceback" in result["traceback"]
    failed = list((tmp_path / "results").glob("failed_*.txt.json"))
    assert len(failed) == 1 and json.loads(failed[0].read_text())["error"] == result["error"]
