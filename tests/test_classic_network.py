"""Our network is the classic repo's (guillaume-chevalier/Hyperopt-Keras-CNN-CIFAR-100,
neural_net.py), block for block: same parameter count and same number of Conv2D, Dense and
BatchNormalization layers.

The expected counts are derived by hand from the classic code, never from our builder:
classic_counts() below walks the classic build_model layer by layer (written from its code, not from
ours), and the TABLE holds the numbers, with the arithmetic of the two named hyperspaces written
out. Models are built, not compiled or trained.
"""
import keras
import numpy as np
import pytest
from hyperopt.pyll import stochastic

from search_space import CLASSIC_BEST_SPACE, DEMO_SPACE, space
from neural_net import STARTING_L2_REG, build_model


def classic_counts(s, nb_fine=100, nb_coarse=20):
    """(params, n_conv, n_dense, n_bn) of the classic network for hyperspace s.

    The classic build_model: flip -> [first_conv: conv 16 filters, k x k] -> per stage i, with
    n = int(40 * conv_hiddn_units_mult) doubling: conv k=int(round(conv_kernel_size)) -> BN [use_BN]
    -> if i >= conv_pool_res_start_idx and residual: residual(): int(round(residual)) units of
    (linear 1x1 conv + conv res_k of dropout(x), then BN [use_BN]), then BN if not use_BN, then BN
    -> pooling: max/avg 2x2 | all_conv: linear 3x3 stride-2 conv (+BN [use_BN]) | inception (below)
    -> dropout. Flatten -> dense int(1000 * fc_units_1_mult) -> [dense int(750 * one_more_fc)] -> 2
    heads. Inception: a = int(0.33 n + 1), w = int(0.4 n + 1); branches: linear 3x3/2 conv w (+BN);
    1x1 conv a -> 3x3 conv w -> linear 3x3/2 conv w (+BN); 1x1 conv w -> 3x3/2 max-pool; concat: 3w
    channels. (Its dead `conv1 = convolution(...)`, overwritten at once, is not in the Keras model.)
    """
    n = dict(params=0, conv=0, dense=0, bn=0)

    def conv(k, c_in, c_out):  # k x k kernel + bias
        n["params"] += k * k * c_in * c_out + c_out
        n["conv"] += 1

    def bn(c):  # gamma, beta, moving mean, moving variance
        n["params"] += 4 * c
        n["bn"] += 1

    def dense(c_in, c_out):
        n["params"] += c_in * c_out + c_out
        n["dense"] += 1

    channels, side = 3, 32
    if s["first_conv"] is not None:
        conv(s["first_conv"], channels, 16)
        channels = 16
    filters = int(40 * s["conv_hiddn_units_mult"])
    for i in range(s["nb_conv_pool_layers"]):
        conv(int(round(s["conv_kernel_size"])), channels, filters)
        channels = filters
        if s["use_BN"]:
            bn(filters)
        if i >= s["conv_pool_res_start_idx"] and s["residual"] is not None:
            for _ in range(int(round(s["residual"]))):
                conv(1, filters, filters)  # linear shortcut
                conv(int(round(s["res_conv_kernel_size"])), filters, filters)
                if s["use_BN"]:
                    bn(filters)
            if not s["use_BN"]:
                bn(filters)
            bn(filters)
        if s["pooling_type"] == "all_conv":
            conv(3, filters, filters)
            if s["use_BN"]:
                bn(filters)
        elif s["pooling_type"] == "inception":
            narrow, width = int(filters * 0.33 + 1), int(filters * 0.4 + 1)
            conv(3, filters, width)  # branch 1: linear, stride 2
            if s["use_BN"]:
                bn(width)
            conv(1, filters, narrow)  # branch 2
            conv(3, narrow, width)
            conv(3, width, width)  # linear, stride 2
            if s["use_BN"]:
                bn(width)
            conv(1, filters, width)  # branch 3, then the max-pool
            channels = 3 * width
        side //= 2  # 32 -> 16 -> 8 -> 4: always even, so 'valid' 2x2 and 'same' stride 2 agree
        filters *= 2
    units = int(1000 * s["fc_units_1_mult"])
    dense(side * side * channels, units)
    if s["one_more_fc"] is not None:
        units_2 = int(750 * s["one_more_fc"])
        dense(units, units_2)
        units = units_2
    dense(units, nb_fine)
    if nb_coarse:
        dense(units, nb_coarse)
    return n["params"], n["conv"], n["dense"], n["bn"]


# CLASSIC_BEST_SPACE (n = int(40 * 1.5958) = 63, fc int(1000 * 1.3084) = 1308, k 3, res_k 2, 3 units
# from stage 0, avg):
#   first conv 3*3*3*16+16 = 448
# stage 0, 16 -> 63:   conv 9*16*63+63 = 9135, BN 252; unit (63*63+63) + (4*63*63+63) + BN 252 =
# 20223, x3 = 60669;
#                        stack BN 252                                                     -> 70308
#   stage 1, 63 -> 126:  71568 + 504 + 3 * (16002 + 63630 + 504) + 504                    -> 312984
#   stage 2, 126 -> 252: 286020 + 1008 + 3 * (63756 + 254268 + 1008) + 1008               -> 1245132
#   dense 4*4*252 -> 1308: 4032*1308+1308 = 5275164; heads 1308*100+100 = 130900, 1308*20+20 = 26180
#   total 448 + 70308 + 312984 + 1245132 + 5275164 + 130900 + 26180 = 7061116;
#   conv 1 + 3 * (1 + 3*2) = 22, dense 3, BN 3 * (1 + 3 + 1) = 15
# DEMO_SPACE (n = 40, k 3, res_k 3, 4 units from stage 0, inception, first conv 4, fc 1000, one more
# fc 750):
#   first conv 4*4*3*16+16 = 784
#   stage 0, 16 -> 40:  conv 5800, BN 160, 4 * (1640 + 14440 + 160) = 64960, stack BN 160;
# inception a=14 w=17: 6137 + 68 | 574 + 2159 + 2618 + 68 | 697 = 12321 -> 83401, 51 channels
#   stage 1, 51 -> 80:  36800 + 320 + 4 * (6480 + 57680 + 320) + 320;
# a=27 w=33: 23793 + 132 | 2187 + 8052 + 9834 + 132 | 2673 = 46803     -> 342163, 99 channels
#   stage 2, 99 -> 160: 142720 + 640 + 4 * (25760 + 230560 + 640) + 640;
# a=53 w=65: 93665 + 260 | 8533 + 31070 + 38090 + 260 | 10465 = 182343 -> 1354183, 195 channels
#   dense 4*4*195 = 3120 -> 1000: 3121000; 1000 -> 750: 750750; heads 75100 + 15020
#   total 784 + 83401 + 342163 + 1354183 + 3121000 + 750750 + 75100 + 15020 = 5742401;
#   conv 1 + 3 * (1 + 4*2 + 5) = 43, dense 4, BN 3 * (1 + 4 + 1 + 2) = 24
# The other rows vary CLASSIC_BEST_SPACE; e.g. max, use_BN, no residual: 448 + 9135 + 252 + 71568 +
# 504 + 286020
# + 1008 + 5275164 + 157080 = 5801179. Without use_BN a residual stack still has 2 BN (the classic
# adds one
# when use_BN is off, and one in any case); with it, one per unit and one more.
TABLE = {  # name: (changes to CLASSIC_BEST_SPACE, params, n_conv, n_dense, n_bn)
    "classic_best": ({}, 7061116, 22, 3, 15),
    "demo": (DEMO_SPACE, 5742401, 43, 4, 24),
    "max-BN-res": (dict(pooling_type="max"), 7061116, 22, 3, 15),
    "max-BN": (dict(pooling_type="max", residual=None), 5801179, 4, 3, 3),
    "max-res": (dict(pooling_type="max", use_BN=False), 7055824, 22, 3, 6),
    "max": (dict(pooling_type="max", use_BN=False, residual=None), 5799415, 4, 3, 0),
    "avg-BN": (dict(residual=None), 5801179, 4, 3, 3),
    "avg-res": (dict(use_BN=False), 7055824, 22, 3, 6),
    "avg": (dict(use_BN=False, residual=None), 5799415, 4, 3, 0),
    "all_conv-BN-res": (dict(pooling_type="all_conv"), 7813462, 25, 3, 18),
    "all_conv-BN": (dict(pooling_type="all_conv", residual=None), 6553525, 7, 3, 6),
    "all_conv-res": (dict(pooling_type="all_conv", use_BN=False), 7806406, 25, 3, 6),
    "all_conv": (dict(pooling_type="all_conv", use_BN=False, residual=None), 6549997, 7, 3, 0),
    "inception-BN-res": (dict(pooling_type="inception"), 8793766, 37, 3, 21),
    "inception-BN": (dict(pooling_type="inception", residual=None), 7533829, 19, 3, 9),
    "inception-res": (dict(pooling_type="inception", use_BN=False), 8787050, 37, 3, 6),
    "inception": (dict(pooling_type="inception", use_BN=False, residual=None), 7530641, 19, 3, 0),
    "first_conv-None": (dict(first_conv=None), 7053297, 21, 3, 15),  # 7061116 - 448 + 9*(3-16)*63
    "first_conv-4": (dict(first_conv=4), 7061452, 22, 3, 15),  # 7061116 + (16-9)*3*16
    # 448 + 70308 + 312984 + 8064*1308+1308 + heads
    "2-stages": (dict(nb_conv_pool_layers=2), 11089840, 15, 3, 10),
    "one_more_fc": (dict(one_more_fc=0.8), 7761556, 22, 4, 15),
    # 7061116 - 60669 - 252
    "res-from-stage-1": (dict(conv_pool_res_start_idx=1.0), 7000195, 16, 3, 11),
    "res-from-stage-2": (dict(conv_pool_res_start_idx=2.0), 6759283, 10, 3, 7),
    "res-from-stage-2-of-2": (dict(conv_pool_res_start_idx=2.0, nb_conv_pool_layers=2), 10788007, 3,
                              3, 2),
}


def space_of(name):
    changes = TABLE[name][0]
    return dict(changes) if name == "demo" else dict(CLASSIC_BEST_SPACE, **changes)


def layer_counts(model):
    def count(kind):
        return sum(isinstance(layer, kind) for layer in model.layers)
    return (model.count_params(), count(keras.layers.Conv2D), count(keras.layers.Dense),
            count(keras.layers.BatchNormalization))


@pytest.fixture(autouse=True)
def fresh_session():
    yield
    keras.backend.clear_session()


def test_table_agrees_with_the_layer_by_layer_count():
    for name, (_, *expected) in TABLE.items():
        assert classic_counts(space_of(name)) == tuple(expected), name


@pytest.mark.parametrize("name", TABLE)
def test_network_has_the_classic_counts(name):
    assert layer_counts(build_model(space_of(name), compile=False)) == tuple(TABLE[name][1:])


def test_cifar10_network_has_one_head():
    model = build_model(CLASSIC_BEST_SPACE, nb_fine=10, nb_coarse=0, compile=False)
    assert layer_counts(model) == classic_counts(CLASSIC_BEST_SPACE, nb_fine=10,
                                                 nb_coarse=0) == (6917126, 22, 2, 15)


def test_random_points_of_the_space_have_the_classic_counts():
    rng = np.random.default_rng(8)
    for _ in range(8):
        point = stochastic.sample(space, rng=rng)
        assert layer_counts(build_model(point, compile=False)) == classic_counts(point), point
        keras.backend.clear_session()


@pytest.mark.parametrize("name", ["demo", "all_conv-BN-res", "inception", "classic_best"])
def test_l2_on_every_kernel_heads_included(name):
    s = space_of(name)
    model = build_model(s, compile=False)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            assert isinstance(layer.kernel_regularizer, keras.regularizers.L2), layer.name
            assert layer.kernel_regularizer.l2 == pytest.approx(
                STARTING_L2_REG * s["l2_weight_reg_mult"]), layer.name
            assert layer.bias_regularizer is None, layer.name
    for head in ("fine_outputs", "coarse_outputs"):
        assert isinstance(model.get_layer(head).kernel_regularizer, keras.regularizers.L2)


@pytest.mark.parametrize("name,stride_2_convs", [("all_conv-BN-res", 3), ("all_conv", 3),
                                                 ("inception", 6),
                                                 ("demo", 6), ("classic_best", 0)])
def test_stride_2_convs_and_shortcuts_are_linear_the_rest_use_the_activation(name, stride_2_convs):
    s = space_of(name)
    convs = [layer for layer in build_model(s,
                                            compile=False).layers
             if isinstance(layer, keras.layers.Conv2D)]
    strided = [c for c in convs if tuple(c.strides) == (2, 2)]
    assert len(strided) == stride_2_convs
    assert all(c.kernel_size == (3, 3) and c.get_config()["activation"] == "linear"
               for c in strided)
    units = sum(int(round(s["residual"])) for i in range(s["nb_conv_pool_layers"])
                if s["residual"] is not None and i >= s["conv_pool_res_start_idx"])
    linear = [c for c in convs if c.get_config()["activation"] == "linear"]
    assert len(linear) == stride_2_convs + units  # + one linear 1x1 shortcut per residual unit
    assert all(c.get_config()["activation"] == s["activation"] for c in convs if c not in linear)
