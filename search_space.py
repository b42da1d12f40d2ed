"""The search space, written once: what TPE draws, the named hyperspaces, and the check of a
hand-written one.

Same keys, hyperopt labels and ranges as the classic Hyperopt-Keras-CNN-CIFAR-100 repo, so its
results.pkl resumes and its result files read. The table SPACE is the only place a range is written:
`space` (what hyperopt searches) and `check_hyperspace` (what train.py and the result readers
accept) are both built from it.
"""
import json
import math
from dataclasses import dataclass

from hyperopt import hp


@dataclass(frozen=True)
class Range:
    """A number drawn by hyperopt: uniform, loguniform (e ** uniform(low, high)) or quniform (a
    multiple of q)."""
    kind: str
    label: str
    low: float
    high: float
    q: float = None

    def hp(self):
        args = (self.low, self.high) if self.q is None else (self.low, self.high, self.q)
        return getattr(hp, self.kind)(self.label, *args)

    def bounds(self):
        if self.kind == "loguniform":
            return math.exp(self.low), math.exp(self.high)
        if self.kind == "quniform":  # hyperopt rounds to the nearest multiple of q
            return round(self.low / self.q) * self.q, round(self.high / self.q) * self.q
        return self.low, self.high

    def accepts(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.bounds()
        on_step = self.q is None or math.isclose(value / self.q, round(value / self.q),
                                                 abs_tol=1e-6)
        return low - 1e-9 <= value <= high + 1e-9 and on_step

    def __str__(self):
        low, high = self.bounds()
        step = ("" if self.q is None else ", a whole number" if self.q == 1
                else f", a multiple of {self.q:g}")
        return f"a number from {low:.4g} to {high:.4g}{step}"


@dataclass(frozen=True)
class Choice:
    """One of the options; an option may itself be a Range or a Choice (a nested hyperparameter)."""
    label: str
    options: tuple

    def hp(self):
        return hp.choice(self.label,
                         [o.hp() if isinstance(o, (Range, Choice)) else o for o in self.options])

    def accepts(self, value):
        return any(o.accepts(value) if isinstance(o, (Range, Choice)) else _same(value, o)
                   for o in self.options)

    def __str__(self):
        return " or ".join(str(o) if isinstance(o, (Range, Choice)) else json.dumps(o)
                           for o in self.options)


def _same(value, option):
    """value is this literal option: True is not 1, and 3.0 is 3 (JSON and hyperopt may write
    either)."""
    if option is None or isinstance(option, (bool, str)) or isinstance(value, bool):
        return type(value) is type(option) and value == option
    return isinstance(value, (int, float)) and value == option


# key of a hyperspace: how hyperopt draws it (hyperopt label first: the classic repo's labels, so
# its trials resume)
SPACE = {
    "lr_rate_mult": Range("loguniform", "lr_rate_mult", -0.5, 0.5),  # learning rate 0.001 * this
    "l2_weight_reg_mult": Range("loguniform", "l2_weight_reg_mult", -1.3, 1.3),  # L2 0.0007 * this
    "batch_size": Range("quniform", "batch_size", 100, 700, 5),
    "optimizer": Choice("optimizer", ("Adam", "Nadam", "RMSprop")),
    # loss weight of the 20-class head
    "coarse_labels_weight": Range("uniform", "coarse_labels_weight", 0.1, 0.7),
    "conv_dropout_drop_proba": Range("uniform", "conv_dropout_proba", 0.0, 0.35),
    "fc_dropout_drop_proba": Range("uniform", "fc_dropout_proba", 0.0, 0.6),
    "use_BN": Choice("use_BN", (False, True)),
    # a 16-filter conv of this kernel
    "first_conv": Choice("first_conv", (None, Choice("first_conv_size", (3, 4)))),
    # a number of residual units
    "residual": Choice("residual",
                       (None, Range("quniform", "residual_units", 1 - 0.499, 4 + 0.499, 1))),
    # 40 * this first filters
    "conv_hiddn_units_mult": Range("loguniform", "conv_hiddn_units_mult", -0.6, 0.6),
    "nb_conv_pool_layers": Choice("nb_conv_pool_layers", (2, 3)),
    "conv_pool_res_start_idx": Range("quniform", "conv_pool_res_start_idx", 0, 2, 1),
    "pooling_type": Choice("pooling_type", ("max", "avg", "all_conv", "inception")),
    "conv_kernel_size": Range("quniform", "conv_kernel_size", 2, 4, 1),
    "res_conv_kernel_size": Range("quniform", "res_conv_kernel_size", 2, 4, 1),
    "fc_units_1_mult": Range("loguniform", "fc_units_1_mult", -0.6, 0.6),  # 1000 * this units
    # 750 * this
    "one_more_fc": Choice("one_more_fc", (None, Range("loguniform", "fc_units_2_mult", -0.6, 0.6))),
    "activation": Choice("activation", ("relu", "elu")),
}
space = {key: what.hp() for key, what in SPACE.items()}  # what hyperopt's fmin searches

# The best hyperspace of the classic repo.
CLASSIC_BEST_SPACE = {
    "activation": "elu", "batch_size": 320.0, "coarse_labels_weight": 0.3067103474295116,
    "conv_dropout_drop_proba": 0.25923531175521264, "conv_hiddn_units_mult": 1.5958302613876916,
    "conv_kernel_size": 3.0, "conv_pool_res_start_idx": 0.0,
    "fc_dropout_drop_proba": 0.4322253354921089, "fc_units_1_mult": 1.3083964454436132,
    "first_conv": 3, "l2_weight_reg_mult": 0.41206755600055983, "lr_rate_mult": 0.6549347353077412,
    "nb_conv_pool_layers": 3, "one_more_fc": None, "optimizer": "Nadam", "pooling_type": "avg",
    "res_conv_kernel_size": 2.0, "residual": 3.0, "use_BN": True,
}

# The classic demo hyperspace (model_demo.png): every optional block switched on.
DEMO_SPACE = {
    "activation": "elu", "batch_size": 300.0, "coarse_labels_weight": 0.2,
    "conv_dropout_drop_proba": 0.175, "conv_hiddn_units_mult": 1.0, "conv_kernel_size": 3.0,
    "conv_pool_res_start_idx": 0.0, "fc_dropout_drop_proba": 0.3, "fc_units_1_mult": 1.0,
    "first_conv": 4, "l2_weight_reg_mult": 1.0, "lr_rate_mult": 1.0, "nb_conv_pool_layers": 3,
    "one_more_fc": 1.0, "optimizer": "Nadam", "pooling_type": "inception",
    "res_conv_kernel_size": 3.0, "residual": 4.0, "use_BN": True,
}
NAMED_SPACES = {"classic_best": CLASSIC_BEST_SPACE, "demo": DEMO_SPACE}


# What a hand-written hyperspace (train.py --space) may hold outside the search's ranges: values
# that still build and train, so a user can try a point the search would not draw. Keys not named
# here must be one of the choices.
WHOLE = "a whole number"
CAN_WORK = {  # key: (what it must be, test of a number)
    "lr_rate_mult": ("above 0", lambda v: v > 0),
    "l2_weight_reg_mult": ("0 or more", lambda v: v >= 0),
    "batch_size": (f"{WHOLE}, 1 or more", lambda v: v >= 1 and v == int(v)),
    "coarse_labels_weight": ("0 or more", lambda v: v >= 0),
    "conv_dropout_drop_proba": ("from 0 to below 1", lambda v: 0 <= v < 1),
    "fc_dropout_drop_proba": ("from 0 to below 1", lambda v: 0 <= v < 1),
    "first_conv": (f"null or {WHOLE}, 1 or more", lambda v: v >= 1 and v == int(v)),
    "residual": ("null or 1 or more", lambda v: round(v) >= 1),
    "conv_hiddn_units_mult": ("1/40 or more (one filter)", lambda v: int(40 * v) >= 1),
    "nb_conv_pool_layers": (f"{WHOLE} from 1 to 5 (each stage halves 32 pixels)",
                            lambda v: 1 <= v <= 5 and v == int(v)),
    "conv_pool_res_start_idx": ("0 or more", lambda v: v >= 0),
    "conv_kernel_size": ("1 or more", lambda v: round(v) >= 1),
    "res_conv_kernel_size": ("1 or more", lambda v: round(v) >= 1),
    "fc_units_1_mult": ("1/1000 or more (one unit)", lambda v: int(1000 * v) >= 1),
    "one_more_fc": ("null or 1/750 or more (one unit)", lambda v: int(750 * v) >= 1),
}


class HyperspaceError(ValueError):
    """A hyperspace that cannot be built or trained; the message names the key and its range."""


def check_hyperspace(hype_space):
    """Raise HyperspaceError (one line) unless hype_space can be built and trained: a dict of every
    key of SPACE, each in the search's range or, for numbers, at least a value that works
    (CAN_WORK).

    Returns one line for each value outside the search's range (the caller shows them as warnings).
    """
    if not isinstance(hype_space, dict):
        raise HyperspaceError(f"a hyperspace is a JSON object of the {len(SPACE)} keys of the "
                              f"search space, not {type(hype_space).__name__}")
    missing = [k for k in SPACE if k not in hype_space]
    unknown = [k for k in hype_space if k not in SPACE]
    if missing or unknown:
        raise HyperspaceError("hyperspace " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else [])
            + ([f"has unknown {_few(unknown)}"] if unknown else [])) + " (see search_space.SPACE)")
    outside = []
    for key, what in SPACE.items():
        value = hype_space[key]
        if what.accepts(value):
            continue
        shown = _shown(value)
        must, works = CAN_WORK.get(key, (None, None))
        is_number = (isinstance(value, (int, float)) and not isinstance(value, bool)
                     and math.isfinite(value))
        if works and is_number and _works(works, value):
            outside.append(f"{key} is {shown}, outside the search's range ({what})")
        else:
            can = f"; outside that range it must be {must}" if must else ""
            raise HyperspaceError(f"hyperspace key {key!r} is {shown}: the search draws "
                                  f"{what}{can}")
    return outside


def _works(test, value):
    try:
        return test(value)
    except (OverflowError, ValueError):  # int(1000 * 1e308): too large to build anything
        return False


def _shown(value, width=60):
    """A value of a hand-written file as one short line: escaped (no terminal codes), cut at
    width."""
    text = json.dumps(value, default=str)  # escapes control characters
    return text if len(text) <= width else text[:width] + "..."


def _few(keys, count=5):
    """The first keys, escaped and cut short: a file may hold thousands, or terminal escape
    codes."""
    shown = ", ".join(_shown(k, 40) for k in keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")
