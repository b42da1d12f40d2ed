"""The CNN that one point of the search space describes, and one trial: build, train, record.

Network, top to bottom (the space key that controls each block in brackets):
    uint8 image -> scale to [-1, 1] -> random left-right flip (training only)
    -> optional 16-filter conv [first_conv]
    -> 2 or 3 stages [nb_conv_pool_layers], filters int(40 * conv_hiddn_units_mult), doubling:
         conv [conv_kernel_size] -> BN [use_BN]
         -> residual units [residual, res_conv_kernel_size] from stage [conv_pool_res_start_idx] on
         -> pooling [pooling_type: max | avg | all_conv | inception] -> dropout [conv_dropout_drop_proba]
    -> flatten -> dense int(1000 * fc_units_1_mult) -> dropout [fc_dropout_drop_proba]
    -> optional dense int(750 * mult) [one_more_fc] -> dropout
    -> softmax heads: fine_outputs (100 classes), coarse_outputs (20 super-classes,
       loss weight [coarse_labels_weight])
Only the public Keras 3 API is used, so any Keras backend runs it.
"""
import functools
import importlib
import json
import math
import os
import time
import traceback
import uuid

import keras
from hyperopt import STATUS_FAIL, STATUS_OK

from data import load_split
from device import choose_precision
from settings import DEFAULT_SETTINGS
from utils import INTERRUPTED, atomic_file, non_finite, raise_if_interrupted, save_json_result, warn

STARTING_L2_REG = 0.0007  # times l2_weight_reg_mult, on every kernel
STARTING_LR = 0.001  # times lr_rate_mult
OPTIMIZERS = {"Adam": keras.optimizers.Adam, "Nadam": keras.optimizers.Nadam, "RMSprop": keras.optimizers.RMSprop}
EVAL_BATCH_SIZE = 500  # validation and test batches: no gradients, so larger than training ones
TENSORBOARD_DIR = "TensorBoard"
NB_CLASSES = {"cifar100": (100, 20), "cifar10": (10, 0)}  # (fine, coarse) classes of each dataset


def l2(hype_space):
    return keras.regularizers.L2(STARTING_L2_REG * hype_space["l2_weight_reg_mult"])


def conv(x, filters, kernel_size, hype_space, strides=1, activation=None):
    """A 'same'-padded conv with L2 on its kernel; the space's activation unless one is given."""
    return keras.layers.Conv2D(
        filters, int(round(kernel_size)), strides=strides, padding="same",
        activation=activation or hype_space["activation"], kernel_regularizer=l2(hype_space))(x)


def bn(x):
    # momentum 0.9, not Keras' 0.99: search trials are short, and with 0.99 the moving statistics still
    # lag the weights after a few hundred steps, so evaluation scores a different network than was trained
    # (classic best, 10,000 images, epoch 3: validation accuracy 0.047 with 0.99, 0.220 with 0.9).
    return keras.layers.BatchNormalization(momentum=0.9)(x)


def maybe_bn(x, hype_space):
    return bn(x) if hype_space["use_BN"] else x


def strided_conv(x, filters, hype_space):
    """Halve the resolution with a linear 3x3 conv of stride 2, then BN [use_BN] (Springenberg et al., 2015)."""
    return maybe_bn(conv(x, filters, 3, hype_space, strides=2, activation="linear"), hype_space)


def residual_unit(x, filters, hype_space):
    """out = linear 1x1 shortcut(x) + conv(dropout(x)), then BN [use_BN]."""
    shortcut = conv(x, filters, 1, hype_space, activation="linear")
    branch = keras.layers.Dropout(hype_space["conv_dropout_drop_proba"])(x)
    branch = conv(branch, filters, hype_space["res_conv_kernel_size"], hype_space)
    return maybe_bn(keras.layers.add([shortcut, branch]), hype_space)


def residual_stack(x, filters, hype_space):
    """int(round(residual)) residual units, then BN twice, as in the classic network.

    The classic stack adds one BN when use_BN is off and one more in any case, so it always ends with
    two BN layers in a row: with use_BN, the last unit's BN and the stack's; without, the two of the stack.
    """
    for _ in range(int(round(hype_space["residual"]))):
        x = residual_unit(x, filters, hype_space)
    if not hype_space["use_BN"]:
        x = bn(x)
    return bn(x)


def inception_reduction(x, filters, hype_space):
    """Halve the resolution with three parallel branches, concatenated (3 * int(0.4 * filters + 1) channels):
    a linear stride-2 conv; 1x1 conv -> 3x3 conv -> linear stride-2 conv; 1x1 conv -> 3x3 max-pool of stride 2.

    The classic code also makes a 3x3 conv of the input that nothing uses (its result is overwritten); that
    conv is not part of its model (Keras keeps only the layers between inputs and outputs), so it is left out.
    """
    narrow, width = int(filters * 0.33 + 1), int(filters * 0.4 + 1)
    a = strided_conv(x, width, hype_space)
    b = conv(x, narrow, 1, hype_space)
    b = conv(b, width, 3, hype_space)
    b = strided_conv(b, width, hype_space)
    c = conv(x, width, 1, hype_space)
    c = keras.layers.MaxPooling2D(3, strides=2, padding="same")(c)
    return keras.layers.concatenate([a, b, c])


def pooling(x, filters, hype_space):
    kind = hype_space["pooling_type"]
    if kind == "max":
        return keras.layers.MaxPooling2D(2)(x)
    if kind == "avg":
        return keras.layers.AveragePooling2D(2)(x)
    if kind == "all_conv":  # a learned stride-2 conv instead of pooling
        return strided_conv(x, filters, hype_space)
    if kind == "inception":
        return inception_reduction(x, filters, hype_space)
    raise ValueError(f"unknown pooling_type {kind!r}")


def dense(x, units, hype_space):
    x = keras.layers.Dense(units, activation=hype_space["activation"], kernel_regularizer=l2(hype_space))(x)
    return keras.layers.Dropout(hype_space["fc_dropout_drop_proba"])(x)


def build_model(hype_space, nb_fine=100, nb_coarse=20, input_dtype="uint8", compile=True):
    """A Keras model for any point of the space, compiled unless compile=False. nb_coarse=0 drops the
    coarse head (CIFAR-10).

    Block for block, it is the classic repo's network: the same layers, widths, kernel sizes, L2 on every
    kernel (both heads included), and so the same number of parameters. It differs on purpose in:
    the heads are softmax, in float32 under mixed precision (classic: sigmoid heads); the input is uint8,
    scaled to [-1, 1] inside the model (the classic repo fed floats scaled to [-0.5, 0.5] on the host:
    x / 255 - 0.5); the random left-right flip is a RandomFlip layer, active in training only (classic:
    flipped at test time too); BatchNormalization momentum is 0.9 (classic: Keras' 0.99); labels are
    integers (sparse cross-entropy, classic: one-hot).
    input_dtype="float32" takes images already scaled to [-1, 1] on the host (the classic repo's way
    of feeding, though it scaled to [-0.5, 0.5]), kept only so that bench/throughput.py can measure it
    against the uint8 one.
    """
    inputs = keras.Input((32, 32, 3), dtype=input_dtype, name="image")
    x = inputs
    if input_dtype == "uint8":
        x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)  # scaling on the device: uint8 goes in
    x = keras.layers.RandomFlip("horizontal")(x)  # augmentation, active in training only

    if hype_space["first_conv"] is not None:
        x = conv(x, 16, hype_space["first_conv"], hype_space)

    filters = int(40 * hype_space["conv_hiddn_units_mult"])
    for stage in range(hype_space["nb_conv_pool_layers"]):
        x = maybe_bn(conv(x, filters, hype_space["conv_kernel_size"], hype_space), hype_space)
        if hype_space["residual"] is not None and stage >= hype_space["conv_pool_res_start_idx"]:
            x = residual_stack(x, filters, hype_space)
        x = pooling(x, filters, hype_space)
        x = keras.layers.Dropout(hype_space["conv_dropout_drop_proba"])(x)
        filters *= 2

    x = keras.layers.Flatten()(x)
    x = dense(x, int(1000 * hype_space["fc_units_1_mult"]), hype_space)
    if hype_space["one_more_fc"] is not None:
        x = dense(x, int(750 * hype_space["one_more_fc"]), hype_space)

    # Heads in float32 so losses stay stable under mixed precision; L2 on them too, as in the classic network.
    def head(n, name):
        return keras.layers.Dense(n, activation="softmax", dtype="float32", kernel_regularizer=l2(hype_space),
                                  name=name)(x)
    outputs = {"fine_outputs": head(nb_fine, "fine_outputs")}
    loss_weights = {"fine_outputs": 1.0}
    if nb_coarse:
        outputs["coarse_outputs"] = head(nb_coarse, "coarse_outputs")
        loss_weights["coarse_outputs"] = hype_space["coarse_labels_weight"]

    model = keras.Model(inputs, outputs, name="hks_cnn")
    if compile:
        model.compile(
            optimizer=OPTIMIZERS[hype_space["optimizer"]](learning_rate=STARTING_LR * hype_space["lr_rate_mult"]),
            loss={name: "sparse_categorical_crossentropy" for name in outputs},  # integer labels, no one-hot copies
            loss_weights=loss_weights,
            metrics=head_metrics(outputs),
        )
    return model


def head_metrics(outputs):
    """Accuracy of each head, logged as <head>_accuracy and val_<head>_accuracy with one head as with two.

    With two outputs Keras 3 prefixes each metric with its output's name and logs each head's loss
    (<head>_loss); with one it does neither (accuracy, val_accuracy), and every reader of the fine metrics
    (KeepBestWeights, pruning.METRIC, the result keys, report.py) would miss them on CIFAR-10. So a single
    head gets its metrics named explicitly, its loss included: the same unweighted cross-entropy, without
    the L2 terms, that Keras logs per head when there are two.
    """
    if len(outputs) > 1:
        return {name: ["accuracy"] for name in outputs}
    (name,) = outputs
    return {name: [keras.metrics.SparseCategoricalAccuracy(name=f"{name}_accuracy"),
                   keras.metrics.SparseCategoricalCrossentropy(name=f"{name}_loss")]}


def draw_model(hype_space, path, dataset="cifar100"):
    """Draw the network of a hyperspace to a PNG with keras.utils.plot_model (needs pydot and graphviz)."""
    model = build_model(hype_space, *NB_CLASSES[dataset])
    try:
        with atomic_file(path) as tmp:  # a reader never sees half a picture
            # 60 dpi: the demo network is about 100 layers tall; its picture stays under 1 MB and readable.
            keras.utils.plot_model(model, to_file=tmp, show_shapes=True, show_layer_names=True,
                                   show_layer_activations=True, dpi=60)
    finally:
        keras.backend.clear_session()
    return path


def try_draw_model(hype_space, path, dataset="cifar100"):
    """draw_model, where a failure (no graphviz, say) is one warning and False: a picture never stops a run."""
    try:
        draw_model(hype_space, path, dataset)
        return True
    except Exception as e:  # noqa: BLE001 -- say which picture and why, and go on
        warn(f"{path} not drawn ({type(e).__name__}: {e})")
        return False


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation fine accuracy (the selected model)."""

    def __init__(self):
        super().__init__()
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        accuracy = logs["val_fine_outputs_accuracy"]
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch, self.best_weights = accuracy, epoch, self.model.get_weights()


class StopOnCtrlC(keras.callbacks.Callback):
    """Stop training or scoring within a batch of a Ctrl-C of the local search (utils.ctrl_c_stops)."""

    def on_train_batch_begin(self, batch, logs=None):  # batch begins: they leave Keras' batch ends asynchronous
        raise_if_interrupted()

    on_test_batch_begin = on_train_begin = on_epoch_end = on_train_batch_begin


def _summarize(history, prefix):
    """The classic result keys for one head, from the validation history."""
    acc, loss = history.get(f"val_{prefix}_outputs_accuracy"), history.get(f"val_{prefix}_outputs_loss")
    if not acc:
        return {f"{prefix}_best_accuracy": None, f"{prefix}_best_loss": None,
                f"{prefix}_end_accuracy": None, f"{prefix}_end_loss": None}
    return {f"{prefix}_best_accuracy": max(acc), f"{prefix}_best_loss": min(loss),
            f"{prefix}_end_accuracy": acc[-1], f"{prefix}_end_loss": loss[-1]}


def train(hype_space, settings, callbacks=()):
    """Build and train one model; return (result dict, trained model with the selected weights)."""
    data = load_split(settings["dataset"], settings["data_dir"], settings["validation"], settings["train_subset"])
    raise_if_interrupted()
    keras.utils.set_random_seed(settings["seed"])
    precision = choose_precision(settings["precision"])
    keras.mixed_precision.set_global_policy(precision)  # layers keep the policy they were built with
    try:
        model = build_model(hype_space, data.nb_fine, data.nb_coarse)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    raise_if_interrupted()
    best, stop = KeepBestWeights(), StopOnCtrlC()
    start = time.time()
    # Plain uint8 arrays on every backend: Keras gathers each shuffled batch from them (no per-epoch
    # copy) and prefetches it; a batch of 320 takes about 1 ms of host time against seconds for the
    # step on a CPU (bench/throughput.py), so tf.data or a PyDataset would buy nothing.
    fit = model.fit(
        data.x_train, data.y_train, batch_size=int(hype_space["batch_size"]), epochs=settings["epochs"],
        validation_data=(data.x_val, data.y_val), validation_batch_size=EVAL_BATCH_SIZE, shuffle=True,
        callbacks=[keras.callbacks.TerminateOnNaN(), stop, best, *callbacks], verbose=settings["verbose"])
    train_time = time.time() - start
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    for key, values in history.items():  # a NaN or infinite loss or metric: the trial diverged
        epoch = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if epoch is not None:
            raise FloatingPointError(f"{key} became {'NaN' if values[epoch] != values[epoch] else 'infinite'} at "
                                     f"epoch {epoch + 1}")
    pruned_at = next((c.pruned_at_epoch for c in callbacks if getattr(c, "pruned_at_epoch", None)), None)
    model.set_weights(best.best_weights)
    if settings["validation"] == "test":  # the selected weights were scored on the test set already
        test = {k: history[f"val_{k}"][best.best_epoch] for k in ("fine_outputs_accuracy", "coarse_outputs_accuracy")
                if f"val_{k}" in history}
    else:
        test = model.evaluate(data.x_test, data.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0, return_dict=True,
                              callbacks=[stop])

    result = {
        "loss": -best.best_accuracy,  # hyperopt minimizes: minus the best validation fine accuracy
        "real_loss": history["val_loss"][-1],  # classic: the total validation loss at the end of training
        **_summarize(history, "fine"),
        **_summarize(history, "coarse"),
        "fine_test_accuracy": float(test["fine_outputs_accuracy"]),
        "coarse_test_accuracy": float(test["coarse_outputs_accuracy"]) if "coarse_outputs_accuracy" in test else None,
        "best_epoch": best.best_epoch + 1,
        "epochs_run": len(history["loss"]),
        "train_time_s": round(train_time, 1),
        "precision": precision,
        "pruned": pruned_at is not None,
        "pruned_at_epoch": pruned_at,
        "nb_params": model.count_params(),
        "train_size": len(data.x_train),
        "validation_size": len(data.x_val),
        "space": hype_space,
        "history": history,
        "status": STATUS_OK,
    }
    where = non_finite(result)
    if where:  # JSON has no such numbers, and a search cannot rank them
        raise FloatingPointError(f"the result's {where} is not a finite number")
    return result, model


@functools.cache
def tensorflow_installed():
    """Keras writes TensorBoard logs with TensorFlow's summary writer, whatever the backend. Said once per process."""
    if keras.backend.backend() != "tensorflow":  # TensorFlow only writes logs here: no grab of all GPU memory
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    try:
        importlib.import_module("tensorflow")  # loaded already on the TensorFlow backend; TensorBoard needs it anyway
        return True
    except ImportError as e:
        print(f"TensorBoard logging is off: it needs TensorFlow ({e}; pip install tensorflow). "
              f"Training goes on without it.", flush=True)
        return False


def tensorboard_callbacks(log_dir):
    """Per-epoch scalars (losses, accuracies, learning rate) to log_dir, or none where TensorFlow is missing."""
    if not tensorflow_installed():
        return []
    # Scalars only: the graph is in model_*.png, and histograms or profiling would slow every epoch.
    return [keras.callbacks.TensorBoard(log_dir, histogram_freq=0, write_graph=False, update_freq="epoch",
                                        profile_batch=0)]


def save_model_files(model, model_name, folder):
    """The trained model (.keras: architecture, weights, optimizer) and its weights alone (.weights.h5)."""
    files = {"model_file": os.path.join(folder, model_name + ".keras"),
             "weights_file": os.path.join(folder, model_name + ".weights.h5")}
    with atomic_file(files["model_file"]) as tmp:  # a full disk leaves no half model behind
        model.save(tmp)
    with atomic_file(files["weights_file"]) as tmp:
        model.save_weights(tmp)
    return files


def build_and_train(hype_space, settings=None, callbacks=(), trial_id=None, save_model=False, save_result=True,
                    before_saving=None):
    """One trial: train, write results/<model_name>.txt.json, return the result.

    A failure of the trial itself (NaN loss, out of memory, a bad combination) is returned as
    STATUS_FAIL with its error and traceback, so the search goes on; a failure to write a file (a full
    disk) is not the trial's: its OSError, naming the file, is raised for the caller to say what was saved.
    With settings["tensorboard"], the epochs are logged to TensorBoard/running_<id>/, renamed
    TensorBoard/<model_name>/ at the end. save_model=True also writes <model_name>.keras and
    <model_name>.weights.h5 beside the result file. save_result=False leaves the result file to the
    caller (the local search writes it once results.pkl holds the trial: utils.save_json_result).
    before_saving(result), when given, runs before the result file is written; what it raises (a MongoDB
    worker's trial was taken away: lost_workers.Heartbeat.keep) leaves no result file.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    run_id = uuid.uuid4().hex[:8]
    recorded = {k: settings[k] for k in ("dataset", "validation", "train_subset", "seed")}
    recorded.update(epochs_budget=settings["epochs"], keras_backend=keras.backend.backend(), trial_id=trial_id)
    log_dir = os.path.join(TENSORBOARD_DIR, f"running_{run_id}")
    if settings["tensorboard"]:
        callbacks = [*callbacks, *tensorboard_callbacks(log_dir)]
    keras.backend.clear_session()  # free the previous trial's graph and memory
    print("Hyperspace:", json.dumps(hype_space, sort_keys=True), flush=True)
    try:
        try:
            result, model = train(hype_space, settings, callbacks)
            result["model_name"] = f"model_{result['fine_best_accuracy']:.4f}_{run_id}"
        except Exception as e:  # noqa: BLE001 -- any failure of one trial must not stop the search
            if INTERRUPTED.is_set():  # after a Ctrl-C of the search: not the trial's failure, it runs again
                raise KeyboardInterrupt from e
            result, model = {"status": STATUS_FAIL, "model_name": f"failed_{run_id}", "space": hype_space,
                             "error": f"{type(e).__name__}: {e}".strip()[:2000],
                             "traceback": traceback.format_exc()}, None
        if save_model and model is not None:
            result.update(save_model_files(model, result["model_name"], settings["results_dir"]))
    finally:
        keras.backend.clear_session()
    result.update(recorded)
    if before_saving is not None:
        before_saving(result)
    if os.path.isdir(log_dir):  # the run shows in TensorBoard under the name of its result file
        result["tensorboard_dir"] = os.path.join(TENSORBOARD_DIR, result["model_name"])
        os.replace(log_dir, result["tensorboard_dir"])
    if save_result:
        save_json_result(result["model_name"], result, settings["results_dir"])
    return result
