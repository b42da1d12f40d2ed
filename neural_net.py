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
import os
import statistics
import time
import traceback
import uuid

import keras
import pymongo
from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK
from hyperopt.mongoexp import MongoCtrl, OperationFailure
from hyperopt.pyll import rec_eval

from data import load_split
from device import choose_precision
from utils import save_json_result

STARTING_L2_REG = 0.0007  # times l2_weight_reg_mult, on every kernel
STARTING_LR = 0.001  # times lr_rate_mult
OPTIMIZERS = {"Adam": keras.optimizers.Adam, "Nadam": keras.optimizers.Nadam, "RMSprop": keras.optimizers.RMSprop}
EVAL_BATCH_SIZE = 500  # validation and test batches: no gradients, so larger than training ones
PRUNE_MIN_TRIALS = 5  # the median stopping rule needs this many finished trials at an epoch to judge it

# How one trial runs; the driver overrides these from its options (and stores them with each result).
DEFAULT_SETTINGS = dict(
    epochs=100,
    dataset="cifar100",
    data_dir="ml_req",
    train_subset=None,  # None: the whole training set
    validation="split",  # "split": 5,000 held-out training images; "test": the test set (classic)
    results_dir="results",
    seed=0,
    verbose=2,  # Keras fit verbosity: one line per epoch
    tensorboard=False,  # per-epoch scalars to TensorBoard/<model_name>/; off: a search would make hundreds of runs
    precision="auto",  # a Keras dtype policy, or auto (device.choose_precision)
    prune="median",  # "median": the search stops trials that fall behind (MedianStoppingRule); or "none"
)
TENSORBOARD_DIR = "TensorBoard"
NB_CLASSES = {"cifar100": (100, 20), "cifar10": (10, 0)}  # (fine, coarse) classes of each dataset

# The best hyperspace of the classic Hyperopt-Keras-CNN-CIFAR-100 repo.
CLASSIC_BEST_SPACE = {
    "activation": "elu", "batch_size": 320.0, "coarse_labels_weight": 0.3067103474295116,
    "conv_dropout_drop_proba": 0.25923531175521264, "conv_hiddn_units_mult": 1.5958302613876916,
    "conv_kernel_size": 3.0, "conv_pool_res_start_idx": 0.0, "fc_dropout_drop_proba": 0.4322253354921089,
    "fc_units_1_mult": 1.3083964454436132, "first_conv": 3, "l2_weight_reg_mult": 0.41206755600055983,
    "lr_rate_mult": 0.6549347353077412, "nb_conv_pool_layers": 3, "one_more_fc": None, "optimizer": "Nadam",
    "pooling_type": "avg", "res_conv_kernel_size": 2.0, "residual": 3.0, "use_BN": True,
}

# The classic demo hyperspace (model_demo.png): every optional block switched on.
DEMO_SPACE = {
    "activation": "elu", "batch_size": 300.0, "coarse_labels_weight": 0.2, "conv_dropout_drop_proba": 0.175,
    "conv_hiddn_units_mult": 1.0, "conv_kernel_size": 3.0, "conv_pool_res_start_idx": 0.0,
    "fc_dropout_drop_proba": 0.3, "fc_units_1_mult": 1.0, "first_conv": 4, "l2_weight_reg_mult": 1.0,
    "lr_rate_mult": 1.0, "nb_conv_pool_layers": 3, "one_more_fc": 1.0, "optimizer": "Nadam",
    "pooling_type": "inception", "res_conv_kernel_size": 3.0, "residual": 4.0, "use_BN": True,
}


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
            metrics={name: ["accuracy"] for name in outputs},
        )
    return model


def draw_model(hype_space, path, dataset="cifar100"):
    """Draw the network of a hyperspace to a PNG with keras.utils.plot_model (needs pydot and graphviz)."""
    model = build_model(hype_space, *NB_CLASSES[dataset])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part.png"  # drawn aside, then renamed: a reader never sees half a picture
    try:
        # 60 dpi: the demo network is about 100 layers tall; its picture stays under 1 MB and readable.
        keras.utils.plot_model(model, to_file=tmp, show_shapes=True, show_layer_names=True,
                               show_layer_activations=True, dpi=60)
        os.replace(tmp, path)
    finally:
        keras.backend.clear_session()
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation fine accuracy (the selected model)."""

    def __init__(self):
        super().__init__()
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        accuracy = logs["val_fine_outputs_accuracy"]
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch, self.best_weights = accuracy, epoch, self.model.get_weights()


class TrialLost(BaseException):
    """The driver gave this trial to another worker (this one was silent too long): stop, record nothing.

    A BaseException, so that build_and_train does not record it as the trial's failure: the trial
    is not over, another worker runs it.
    """


class Heartbeat(keras.callbacks.Callback):
    """On a MongoDB worker: tell the driver this trial is alive, as training starts and after each epoch.

    hyperopt's ctrl.checkpoint() stamps the job's refresh_time and gives it a new version; the
    driver requeues trials that stay silent (mongo_search.RequeueLostTrials). It fails once the
    driver has requeued the job (this worker was silent too long), and then the trial stops here.
    """

    def __init__(self, ctrl):
        super().__init__()
        self.ctrl = ctrl

    def beat(self):
        try:
            self.ctrl.checkpoint()
        except OperationFailure as e:  # no job at the version this worker holds: the driver requeued it
            self.ctrl.read_only = True  # hyperopt then writes nothing more to the job for this worker
            raise TrialLost(f"trial {self.ctrl.current_trial['tid']} was requeued by the driver: {e}") from None
        except pymongo.errors.ConnectionFailure as e:  # MongoDB unreachable for now: train on, beat next epoch
            print(f"Heartbeat not sent ({type(e).__name__}), will try again after the next epoch", flush=True)

    def on_train_begin(self, logs=None):
        self.beat()

    def on_epoch_end(self, epoch, logs=None):
        self.beat()


def prune_warmup(epochs_budget):
    """Epochs a trial always runs: learning curves cross early (slow starters: small learning rates,
    large batches), so a tenth of the budget, and at least 2."""
    return max(2, epochs_budget // 10)


def best_by_epoch(trials, epoch):
    """Best validation fine accuracy within their first `epoch` epochs, of the finished trials that ran that far."""
    trials.refresh()  # MongoTrials: read what the other workers finished; local Trials: cheap
    reached = []
    for trial in trials.trials:
        accuracy = trial["result"].get("history", {}).get("val_fine_outputs_accuracy", [])
        if trial["state"] == JOB_STATE_DONE and trial["result"].get("status") == STATUS_OK and len(accuracy) >= epoch:
            reached.append(max(accuracy[:epoch]))
    return reached


class MedianStoppingRule(keras.callbacks.Callback):
    """Stop a trial whose best validation fine accuracy so far is below the median of what the finished
    trials had reached by the same epoch (the median stopping rule of Google Vizier, Golovin et al. 2017).

    `trials` is hyperopt's ctrl.trials, so a MongoDB worker judges against what every worker finished.
    Pruned trials count too, for the epochs they ran. The trial keeps its honest (low) loss for TPE.
    """

    def __init__(self, trials, epochs_budget):
        super().__init__()
        self.trials, self.epochs_budget = trials, epochs_budget
        self.best, self.pruned_at_epoch = -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        self.best = max(self.best, logs["val_fine_outputs_accuracy"])
        done = epoch + 1
        if done < prune_warmup(self.epochs_budget) or done >= self.epochs_budget:
            return  # still warming up, or the last epoch, where stopping saves nothing
        try:
            reached = best_by_epoch(self.trials, done)
        except Exception as e:  # noqa: BLE001 -- an unreachable database must not fail the trial: train on
            print(f"Pruning skipped at epoch {done}: cannot read the finished trials ({type(e).__name__}: {e})")
            return
        if len(reached) >= PRUNE_MIN_TRIALS and self.best < statistics.median(reached):
            print(f"Pruned at epoch {done}: best validation fine accuracy {self.best:.4f} is below the median "
                  f"{statistics.median(reached):.4f} of {len(reached)} finished trials at that epoch", flush=True)
            self.pruned_at_epoch = done
            self.model.stop_training = True


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
    keras.utils.set_random_seed(settings["seed"])
    precision = choose_precision(settings["precision"])
    keras.mixed_precision.set_global_policy(precision)  # layers keep the policy they were built with
    try:
        model = build_model(hype_space, data.nb_fine, data.nb_coarse)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    best = KeepBestWeights()
    start = time.time()
    # Plain uint8 arrays on every backend: Keras gathers each shuffled batch from them (no per-epoch
    # copy) and prefetches it; a batch of 320 takes about 1 ms of host time against seconds for the
    # step on a CPU (bench/throughput.py), so tf.data or a PyDataset would buy nothing.
    fit = model.fit(
        data.x_train, data.y_train, batch_size=int(hype_space["batch_size"]), epochs=settings["epochs"],
        validation_data=(data.x_val, data.y_val), validation_batch_size=EVAL_BATCH_SIZE, shuffle=True,
        callbacks=[keras.callbacks.TerminateOnNaN(), best, *callbacks], verbose=settings["verbose"])
    train_time = time.time() - start
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    if any(v != v for v in history["loss"]):  # NaN != NaN
        raise FloatingPointError(f"loss became NaN at epoch {len(history['loss'])}")
    pruned_at = next((c.pruned_at_epoch for c in callbacks if isinstance(c, MedianStoppingRule)), None)
    model.set_weights(best.best_weights)
    if settings["validation"] == "test":  # the selected weights were scored on the test set already
        test = {k: history[f"val_{k}"][best.best_epoch] for k in ("fine_outputs_accuracy", "coarse_outputs_accuracy")
                if f"val_{k}" in history}
    else:
        test = model.evaluate(data.x_test, data.y_test, batch_size=EVAL_BATCH_SIZE, verbose=0, return_dict=True)

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
    os.makedirs(folder, exist_ok=True)
    files = {"model_file": os.path.join(folder, model_name + ".keras"),
             "weights_file": os.path.join(folder, model_name + ".weights.h5")}
    model.save(files["model_file"])
    model.save_weights(files["weights_file"])
    return files


def build_and_train(hype_space, settings=None, callbacks=(), trial_id=None, save_model=False):
    """One trial: train, write results/<model_name>.txt.json, return the result.

    A failure of the trial itself (NaN loss, out of memory, a bad combination) is returned as
    STATUS_FAIL with its error and traceback, so the search goes on. With settings["tensorboard"], the
    epochs are logged to TensorBoard/running_<id>/, renamed TensorBoard/<model_name>/ at the end.
    save_model=True also writes <model_name>.keras and <model_name>.weights.h5 beside the result file.
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
        result, model = train(hype_space, settings, callbacks)
        result["model_name"] = f"model_{result['fine_best_accuracy']:.4f}_{run_id}"
        if save_model:
            result.update(save_model_files(model, result["model_name"], settings["results_dir"]))
    except Exception as e:  # noqa: BLE001 -- any failure of one trial must not stop the search
        result = {"status": STATUS_FAIL, "model_name": f"failed_{run_id}", "space": hype_space,
                  "error": f"{type(e).__name__}: {e}".strip()[:2000], "traceback": traceback.format_exc()}
    finally:
        keras.backend.clear_session()
    result.update(recorded)
    if os.path.isdir(log_dir):  # the run shows in TensorBoard under the name of its result file
        result["tensorboard_dir"] = os.path.join(TENSORBOARD_DIR, result["model_name"])
        os.replace(log_dir, result["tensorboard_dir"])
    save_json_result(result["model_name"], result, settings["results_dir"])
    return result


def _objective(expr, memo, ctrl, settings):
    """What hyperopt calls for each trial. It passes the trial's ctrl: its id, and its view of the other trials."""
    hype_space = rec_eval(expr, memo=memo)
    callbacks = []
    if settings.get("prune", "none") == "median":
        callbacks.append(MedianStoppingRule(ctrl.trials, settings["epochs"]))
    if isinstance(ctrl, MongoCtrl):  # a MongoDB worker: heartbeats let the driver requeue trials of dead workers
        callbacks.append(Heartbeat(ctrl))
    return build_and_train(hype_space, settings, callbacks=callbacks, trial_id=ctrl.current_trial["tid"])


def make_objective(settings):
    """The objective for fmin, bound to the experiment's settings.

    It lives in this importable module (not in __main__), so hyperopt can pickle it by reference.
    """
    objective = functools.partial(_objective, settings=settings)
    objective.fmin_pass_expr_memo_ctrl = True  # hyperopt then calls it with (expr, memo, ctrl)
    return objective
