"""The CNN that one point of the search space describes (trial.py trains it).

Network, top to bottom (the space key that controls each block in brackets):
    uint8 image -> scale to [-1, 1] -> random left-right flip (training only)
    -> optional 16-filter conv [first_conv]
    -> 2 or 3 stages [nb_conv_pool_layers], filters int(40 * conv_hiddn_units_mult), doubling:
         conv [conv_kernel_size] -> BN [use_BN]
         -> residual units [residual, res_conv_kernel_size] from stage [conv_pool_res_start_idx] on
         -> pooling [pooling_type: max | avg | all_conv | inception]
         -> dropout [conv_dropout_drop_proba]
    -> flatten -> dense int(1000 * fc_units_1_mult) -> dropout [fc_dropout_drop_proba]
    -> optional dense int(750 * mult) [one_more_fc] -> dropout
    -> softmax heads: fine_outputs (100 classes), coarse_outputs (20 super-classes,
       loss weight [coarse_labels_weight])
Only the public Keras 3 API is used, so any Keras backend runs it.
"""
import keras

STARTING_L2_REG = 0.0007  # times l2_weight_reg_mult, on every kernel
STARTING_LR = 0.001  # times lr_rate_mult
OPTIMIZERS = {"Adam": keras.optimizers.Adam, "Nadam": keras.optimizers.Nadam,
              "RMSprop": keras.optimizers.RMSprop}


def l2(hype_space):
    return keras.regularizers.L2(STARTING_L2_REG * hype_space["l2_weight_reg_mult"])


def conv(x, filters, kernel_size, hype_space, strides=1, activation=None):
    """A 'same'-padded conv with L2 on its kernel; the space's activation unless one is given."""
    return keras.layers.Conv2D(
        filters, int(round(kernel_size)), strides=strides, padding="same",
        activation=activation or hype_space["activation"], kernel_regularizer=l2(hype_space))(x)


def bn(x):
    # momentum 0.9, not Keras' 0.99: search trials are short, and with 0.99 the moving statistics
    # still lag the weights after a few hundred steps, so evaluation scores a different network than
    # was trained (classic best, 10,000 images, epoch 3: validation accuracy 0.047 with 0.99, 0.220
    # with 0.9).
    return keras.layers.BatchNormalization(momentum=0.9)(x)


def maybe_bn(x, hype_space):
    return bn(x) if hype_space["use_BN"] else x


def strided_conv(x, filters, hype_space):
    """Halve the resolution with a linear 3x3 conv of stride 2, then BN [use_BN] (Springenberg et
    al., 2015)."""
    return maybe_bn(conv(x, filters, 3, hype_space, strides=2, activation="linear"), hype_space)


def residual_unit(x, filters, hype_space):
    """out = linear 1x1 shortcut(x) + conv(dropout(x)), then BN [use_BN]."""
    shortcut = conv(x, filters, 1, hype_space, activation="linear")
    branch = keras.layers.Dropout(hype_space["conv_dropout_drop_proba"])(x)
    branch = conv(branch, filters, hype_space["res_conv_kernel_size"], hype_space)
    return maybe_bn(keras.layers.add([shortcut, branch]), hype_space)


def residual_stack(x, filters, hype_space):
    """int(round(residual)) residual units, then BN twice, as in the classic network.

    The classic stack adds one BN when use_BN is off and one more in any case, so it always ends
    with two BN layers in a row: with use_BN, the last unit's BN and the stack's; without, the two
    of the stack.
    """
    for _ in range(int(round(hype_space["residual"]))):
        x = residual_unit(x, filters, hype_space)
    if not hype_space["use_BN"]:
        x = bn(x)
    return bn(x)


def inception_reduction(x, filters, hype_space):
    """Halve the resolution with three parallel branches, concatenated (3 * int(0.4 * filters + 1)
    channels): a linear stride-2 conv; 1x1 conv -> 3x3 conv -> linear stride-2 conv; 1x1 conv -> 3x3
    max-pool of stride 2.

    The classic code also makes a 3x3 conv of the input that nothing uses (its result is
    overwritten); that conv is not part of its model (Keras keeps only the layers between inputs and
    outputs), so it is left out.
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
    x = keras.layers.Dense(units, activation=hype_space["activation"],
                           kernel_regularizer=l2(hype_space))(x)
    return keras.layers.Dropout(hype_space["fc_dropout_drop_proba"])(x)


def build_model(hype_space, nb_fine=100, nb_coarse=20, input_dtype="uint8", compile=True):
    """A Keras model for any point of the space, compiled unless compile=False. nb_coarse=0 drops
    the coarse head (CIFAR-10).

    Block for block, it is the classic repo's network: the same layers, widths, kernel sizes, L2 on
    every kernel (both heads included), and so the same number of parameters. It differs on purpose
    in: the heads are softmax, in float32 under mixed precision (classic: sigmoid heads); the input
    is uint8, scaled to [-1, 1] inside the model (the classic repo fed floats scaled to [-0.5, 0.5]
    on the host: x / 255 - 0.5); the random left-right flip is a RandomFlip layer, active in
    training only (classic: flipped at test time too); BatchNormalization momentum is 0.9 (classic:
    Keras' 0.99); labels are integers (sparse cross-entropy, classic: one-hot).
    input_dtype="float32" takes images already scaled to [-1, 1] on the host (the classic repo's way
    of feeding, though it scaled to [-0.5, 0.5]), kept only so that bench/throughput.py can measure
    it against the uint8 one.
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

    # Heads in float32 so losses stay stable under mixed precision; L2 on them too, as in the
    # classic network.
    def head(n, name):
        return keras.layers.Dense(n, activation="softmax", dtype="float32",
                                  kernel_regularizer=l2(hype_space),
                                  name=name)(x)
    outputs = {"fine_outputs": head(nb_fine, "fine_outputs")}
    loss_weights = {"fine_outputs": 1.0}
    if nb_coarse:
        outputs["coarse_outputs"] = head(nb_coarse, "coarse_outputs")
        loss_weights["coarse_outputs"] = hype_space["coarse_labels_weight"]

    model = keras.Model(inputs, outputs, name="hks_cnn")
    if compile:
        model.compile(
            optimizer=OPTIMIZERS[hype_space["optimizer"]](
                learning_rate=STARTING_LR * hype_space["lr_rate_mult"]),
            # integer labels, no one-hot copies
            loss={name: "sparse_categorical_crossentropy" for name in outputs},
            loss_weights=loss_weights,
            metrics=head_metrics(outputs),
        )
    return model


def head_metrics(outputs):
    """Accuracy of each head, logged as <head>_accuracy and val_<head>_accuracy with one head as
    with two.

    With two outputs Keras 3 prefixes each metric with its output's name and logs each head's loss
    (<head>_loss); with one it does neither (accuracy, val_accuracy), and every reader of the fine
    metrics (KeepBestWeights, record.METRIC, the result keys, report.py) would miss them on
    CIFAR-10. So a single head gets its metrics named explicitly, its loss included: the same
    unweighted cross-entropy, without the L2 terms, that Keras logs per head when there are two.
    """
    if len(outputs) > 1:
        return {name: ["accuracy"] for name in outputs}
    (name,) = outputs
    return {name: [keras.metrics.SparseCategoricalAccuracy(name=f"{name}_accuracy"),
                   keras.metrics.SparseCategoricalCrossentropy(name=f"{name}_loss")]}
