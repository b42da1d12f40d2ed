"""Any Keras backend, and the precision option: the model and a short training under JAX with TensorFlow
made unimportable (as on a GPU server that has only JAX), and mixed precision with float32 heads."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from hyperopt import STATUS_OK

from conftest import ROOT, write_cifar100_archive
from device import choose_precision, supported_precisions
from settings import Settings
from trial import train
from test_neural_net import SMALL

# Run a script as `python3 script args` would, with `import tensorflow` failing as on a machine without it.
WITHOUT_TENSORFLOW = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("No module named 'tensorflow'")
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_on(backend, args, cwd):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def test_jax_builds_every_architecture_and_trains_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    (tmp_path / "small.json").write_text(json.dumps(dict(SMALL, batch_size=32.0, lr_rate_mult=1.0)))
    (tmp_path / "check_models.py").write_text(
        "import numpy as np, keras\n"
        "from test_neural_net import CASES, SMALL\n"
        "from neural_net import build_model\nfrom search_space import CLASSIC_BEST_SPACE\n"
        "images = np.zeros((2, 32, 32, 3), np.uint8)\n"
        "for case in CASES:\n"
        "    out = build_model(dict(SMALL, **case))(images)\n"
        "    assert out['fine_outputs'].shape == (2, 100) and out['coarse_outputs'].shape == (2, 20)\n"
        "print(keras.backend.backend(), round(build_model(CLASSIC_BEST_SPACE).count_params() / 1e6, 2))\n")
    models = run_on("jax", ["check_models.py"], tmp_path)
    assert models.returncode == 0, models.stderr
    assert models.stdout.split() == ["jax", "7.06"]

    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=60, test_per_class=10)
    trained = run_on("jax", [os.path.join(ROOT, "train.py"), "--space", "small.json", "--epochs", "2"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    (path,) = (tmp_path / "results").glob("model_*.txt.json")
    result = json.loads(path.read_text())
    assert result["keras_backend"] == "jax" and result["precision"] == "float32"
    assert result["fine_best_accuracy"] > 0.5  # 10 easy classes: chance is 0.1


def test_precision_auto_follows_the_hardware():
    h100, t4, p100 = ("gpu", "H100", (9, 0)), ("gpu", "T4", (7, 5)), ("gpu", "P100", (6, 0))
    assert [choose_precision("auto", d) for d in (h100, t4, p100)] == ["mixed_bfloat16", "mixed_float16", "float32"]
    assert choose_precision("auto", ("tpu", "v4", None)) == "mixed_bfloat16"
    assert choose_precision("auto", ("cpu", "Xeon", {"avx512_bf16", "avx512_fp16"})) == "float32"
    assert choose_precision("mixed_float16", ("cpu", "Xeon", set())) == "mixed_float16"  # asked for: obeyed
    assert supported_precisions(("cpu", "Xeon", {"avx512_bf16", "avx512_fp16"})) == ["float32", "mixed_bfloat16"]
    assert supported_precisions(("cpu", "old", set())) == ["float32"]
    assert supported_precisions(h100) == ["float32", "mixed_float16", "mixed_bfloat16"]


def test_mixed_precision_trains_with_float32_heads_and_leaves_the_default_policy(tmp_path):
    write_cifar100_archive(tmp_path / "ml_req", classes=range(10), train_per_class=20, test_per_class=2)
    settings = Settings(epochs=1, data_dir=str(tmp_path / "ml_req"), results_dir=str(tmp_path / "results"),
                        precision="mixed_bfloat16")
    result, model = train(dict(SMALL, batch_size=32.0), settings)
    assert result["status"] == STATUS_OK and result["precision"] == "mixed_bfloat16"
    assert np.isfinite(result["real_loss"])
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32" for layer in convs)
    assert model.get_layer("fine_outputs").compute_dtype == "float32"
    assert model.get_layer("coarse_outputs").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # the next model is float32 again


def test_bad_precision_is_a_usage_error(capsys):
    import hyperopt_optimize
    with pytest.raises(SystemExit) as exit_:
        hyperopt_optimize.parse_args(["--precision", "half"])
    assert exit_.value.code == 2 and "--precision" in capsys.readouterr().err.splitlines()[-1]
