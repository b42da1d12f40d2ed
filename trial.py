"""One trial, top to bottom: data, model, fit, select, score, record.

    result, model = run_trial(hype_space, settings, rule=None, hooks=(), trial_id=None)

It writes no result file: the local driver, the MongoDB worker (objective.py) and train.py save
what it returns with record.save_result. A failure of the trial itself (NaN loss, out of memory,
a bad combination) is returned as a failed result with its reason, so the search goes on.
"""
import functools
import importlib
import json
import math
import os
import sys
import time
import traceback
import uuid

import keras
from hyperopt import STATUS_OK

import neural_net
import record
from data import CLASSES
from device import choose_precision
from settings import TENSORBOARD_DIR
from utils import INTERRUPTED, atomic_file, non_finite, raise_if_interrupted, warn

EVAL_BATCH_SIZE = 500  # validation and test batches: no gradients, so larger than training ones


class KeepBestWeights(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best validation fine accuracy (the selected model)."""

    def __init__(self):
        super().__init__()
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        accuracy = logs[record.METRIC]
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self.best_weights = self.model.get_weights()


class AfterEachEpoch(keras.callbacks.Callback):
    """The trial's stopping rule (pruning.py) judges each epoch's validation fine accuracy, then the
    hooks run (a MongoDB worker's heartbeat, which carries the rule's partial result); the hooks
    also run as training begins."""

    def __init__(self, rule, hooks):
        super().__init__()
        self.rule, self.hooks = rule, hooks

    def on_train_begin(self, logs=None):
        for hook in self.hooks:
            hook()

    def on_epoch_end(self, epoch, logs=None):
        if self.rule is not None and not self.rule.report(epoch + 1, float(logs[record.METRIC])):
            self.model.stop_training = True
        for hook in self.hooks:
            hook()


class StopOnCtrlC(keras.callbacks.Callback):
    """Stop training or scoring within a batch of a Ctrl-C of the search (utils.ctrl_c_stops)."""

    def on_train_batch_begin(self, batch, logs=None):  # Keras' batch ends are asynchronous
        raise_if_interrupted()

    on_test_batch_begin = on_train_begin = on_epoch_end = on_train_batch_begin


def fit_verbosity():
    """A progress bar within each epoch on a terminal; one line per epoch in logs and pipes."""
    return 1 if sys.stdout.isatty() else 2


def train(hype_space, settings, callbacks=()):
    """Build and train one model: (result, the trained model with the selected weights)."""
    data = settings.load_split()
    raise_if_interrupted()
    keras.utils.set_random_seed(settings.seed)
    precision = choose_precision(settings.precision)
    keras.mixed_precision.set_global_policy(precision)  # layers keep the policy they are built with
    try:
        model = neural_net.build_model(hype_space, data.nb_fine, data.nb_coarse)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    raise_if_interrupted()
    best, stop = KeepBestWeights(), StopOnCtrlC()
    start = time.time()
    # Plain uint8 arrays on every backend: Keras gathers each shuffled batch from them (no per-epoch
    # copy) and prefetches it; a batch of 320 takes about 1 ms of host time against seconds for the
    # step on a CPU (bench/throughput.py), so tf.data or a PyDataset would buy nothing.
    fit = model.fit(
        data.x_train, data.y_train, batch_size=int(hype_space["batch_size"]),
        epochs=settings.epochs, validation_data=(data.x_val, data.y_val),
        validation_batch_size=EVAL_BATCH_SIZE, shuffle=True, verbose=fit_verbosity(),
        callbacks=[keras.callbacks.TerminateOnNaN(), stop, best, *callbacks])
    train_time = time.time() - start
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    for key, values in history.items():  # a NaN or infinite loss or metric: the trial diverged
        epoch = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if epoch is not None:
            kind = "NaN" if values[epoch] != values[epoch] else "infinite"
            raise FloatingPointError(f"{key} became {kind} at epoch {epoch + 1}")
    model.set_weights(best.best_weights)
    if settings.validation == "test":  # the selected weights were scored on the test set already
        test = {k: history[f"val_{k}"][best.best_epoch]
                for k in ("fine_outputs_accuracy", "coarse_outputs_accuracy")
                if f"val_{k}" in history}
    else:
        test = model.evaluate(data.x_test, data.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0,
                              return_dict=True, callbacks=[stop])
    result = {
        "loss": -best.best_accuracy,  # hyperopt minimizes: minus the best validation fine accuracy
        "real_loss": history["val_loss"][-1],  # classic: total validation loss at the end
        **record.summarize(history, "fine"),
        **record.summarize(history, "coarse"),
        "fine_test_accuracy": float(test["fine_outputs_accuracy"]),
        "coarse_test_accuracy": (float(test["coarse_outputs_accuracy"])
                                 if "coarse_outputs_accuracy" in test else None),
        "best_epoch": best.best_epoch + 1,
        "epochs_run": len(history["loss"]),
        "train_time_s": round(train_time, 1),
        "precision": precision,
        "nb_params": model.count_params(),
        "train_size": len(data.x_train),
        "validation_size": len(data.x_val),
        "space": hype_space,
        "history": history,
        "status": STATUS_OK,
    }
    return result, model


def run_trial(hype_space, settings, rule=None, hooks=(), trial_id=None, callbacks=()):
    """One trial of hype_space under settings (settings.Settings): (result, trained model or None).

    rule: the stopping rule (pruning.py) the trial reports each epoch to; hooks: functions called
    as training begins and after each epoch; callbacks: more Keras callbacks (the benchmarks').
    With settings.tensorboard the epochs are logged to
    TensorBoard/<model_name>/. A Ctrl-C of the local search is not the trial's failure: it raises
    KeyboardInterrupt.
    """
    run_id = uuid.uuid4().hex[:8]
    log_dir = os.path.join(TENSORBOARD_DIR, f"running_{run_id}")
    callbacks = [AfterEachEpoch(rule, list(hooks)), *callbacks]
    if settings.tensorboard:
        callbacks += tensorboard_callbacks(log_dir)
    keras.backend.clear_session()  # free the previous trial's graph and memory
    print("Hyperspace:", json.dumps(hype_space, sort_keys=True), flush=True)
    try:
        result, model = train(hype_space, settings, callbacks)
        pruned_at = rule.pruned_at_epoch if rule is not None else None
        result.update(pruned=pruned_at is not None, pruned_at_epoch=pruned_at,
                      model_name=record.model_name(result["fine_best_accuracy"], run_id))
        where = non_finite(result)
        if where:  # JSON has no such numbers, and a search cannot rank them
            raise FloatingPointError(f"the result's {where} is not a finite number")
    except Exception as e:  # noqa: BLE001 -- any failure of one trial must not stop the search
        if INTERRUPTED.is_set():  # a Ctrl-C of the search: not the trial's failure, it runs again
            raise KeyboardInterrupt from e
        result, model = record.failed_result(hype_space, f"{type(e).__name__}: {e}", run_id,
                                             traceback=traceback.format_exc()), None
    finally:
        keras.backend.clear_session()
    result.update(settings.recorded(), keras_backend=keras.backend.backend(), trial_id=trial_id)
    if os.path.isdir(log_dir):  # the run shows in TensorBoard under the name of its result file
        result["tensorboard_dir"] = os.path.join(TENSORBOARD_DIR, result["model_name"])
        os.replace(log_dir, result["tensorboard_dir"])
    return result, model


@functools.cache
def tensorflow_installed():
    """Keras writes TensorBoard logs with TensorFlow's summary writer, whatever the backend."""
    if keras.backend.backend() != "tensorflow":  # TensorFlow only writes logs: not all GPU memory
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    try:
        importlib.import_module("tensorflow")
        return True
    except ImportError as e:
        print(f"TensorBoard logging is off: it needs TensorFlow ({e}; pip install tensorflow). "
              f"Training goes on without it.", flush=True)
        return False


def tensorboard_callbacks(log_dir):
    """Per-epoch scalars (losses, accuracies, learning rate) to log_dir; none without TensorFlow."""
    if not tensorflow_installed():
        return []
    # Scalars only: the graph is in model_*.png, and histograms or profiling would slow every epoch.
    return [keras.callbacks.TensorBoard(log_dir, histogram_freq=0, write_graph=False,
                                        update_freq="epoch", profile_batch=0)]


def save_model_files(model, name, folder):
    """The trained model (.keras: architecture, weights, optimizer) and its .weights.h5."""
    files = {"model_file": os.path.join(folder, name + ".keras"),
             "weights_file": os.path.join(folder, name + ".weights.h5")}
    with atomic_file(files["model_file"]) as tmp:  # a full disk leaves no half model behind
        model.save(tmp)
    with atomic_file(files["weights_file"]) as tmp:
        model.save_weights(tmp)
    return files


def draw_model(hype_space, path, dataset="cifar100"):
    """Draw the network of a hyperspace to a PNG (keras.utils.plot_model: pydot and graphviz)."""
    model = neural_net.build_model(hype_space, *CLASSES[dataset])
    try:
        with atomic_file(path) as tmp:  # a reader never sees half a picture
            # 60 dpi: the demo network is about 100 layers tall; its picture stays under 1 MB.
            keras.utils.plot_model(model, to_file=tmp, show_shapes=True, show_layer_names=True,
                                   show_layer_activations=True, dpi=60)
    finally:
        keras.backend.clear_session()
    return path


def try_draw_model(hype_space, path, dataset="cifar100"):
    """draw_model; a failure (no graphviz, say) is one warning and False: never stops a run."""
    try:
        draw_model(hype_space, path, dataset)
        return True
    except Exception as e:  # noqa: BLE001 -- say which picture and why, and go on
        warn(f"{path} not drawn ({type(e).__name__}: {e})")
        return False
