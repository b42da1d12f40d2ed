"""How a trial runs (epochs, dataset, validation, ...): the settings, their defaults and their command-line options.

Defined once here, used by the search (hyperopt_optimize.py), its MongoDB workers (the driver stores
the settings with the experiment), train.py and the benchmarks. Each option has an env twin where
a Makefile target or a container sets it.
"""
import argparse
import os
from dataclasses import asdict, dataclass, fields, replace

from data import ARCHIVES, load_split

TENSORBOARD_DIR = "TensorBoard"  # each model's epochs, with --tensorboard (make tensorboard shows them)
PRECISIONS = ["auto", "float32", "mixed_float16", "mixed_bfloat16"]  # device.choose_precision

@dataclass(frozen=True)
class Settings:
    """How the trials of a search run: built once from the options and the environment (from_args),
    passed whole to every trial, stored with a MongoDB experiment (as_dict, from_dict)."""

    epochs: int = 100
    dataset: str = "cifar100"
    data_dir: str = "ml_req"
    train_subset: int | None = None  # None: the whole training set
    validation: str = "split"  # "split": 5,000 held-out training images; "test": the test set (classic)
    results_dir: str = "results"
    seed: int = 0
    tensorboard: bool = False  # per-epoch scalars to TensorBoard/<model_name>/
    precision: str = "auto"  # a Keras dtype policy, or auto (device.choose_precision)
    prune: str = "auto"  # the stopping rule (pruning.py): curve on 2,000 validation images or more
    prune_eta: int = 3  # asha: 1/eta of the trials at a rung go on; rungs every eta-fold of epochs
    prune_min_epochs: int = 1  # asha: the first rung, in epochs
    stale_after: float | None = None  # MongoDB: a trial silent this long lost its worker

    @classmethod
    def from_args(cls, args):
        """The settings that parsed options ask for; the defaults where a command has no option."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    @classmethod
    def from_dict(cls, stored):
        """The settings stored with an experiment (keys of other versions are left out)."""
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})

    def as_dict(self):
        return asdict(self)

    def replace(self, **changes):
        return replace(self, **changes)

    def load_split(self):
        """The trial's data (data.load_split: cached, one load per process)."""
        return load_split(self.dataset, self.data_dir, self.validation, self.train_subset)

    def recorded(self):
        """The settings each result records: what its accuracies mean."""
        return {"dataset": self.dataset, "validation": self.validation,
                "train_subset": self.train_subset, "seed": self.seed, "epochs_budget": self.epochs}


DEFAULTS = Settings()
PRUNE_RULES = ["auto", "asha", "curve", "median", "none"]


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"  # argparse names the type in its error message


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


positive_float.__name__ = "positive number"


MAX_SEED = 2**32 - 1  # numpy and Keras take seeds from 0 to 2**32 - 1


def seed(text):
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise ValueError
    return value


seed.__name__ = f"seed (a whole number from 0 to {MAX_SEED})"


def int_from_two(text):
    value = int(text)
    if value < 2:
        raise ValueError
    return value


int_from_two.__name__ = "integer from 2"


def add_training_options(p):
    """The options of one training run, shared by the search and by train.py."""
    env = os.environ.get
    p.add_argument("--epochs", type=positive_int, default=env("HKS_EPOCHS", DEFAULTS.epochs),
                   help="epochs per trial (env HKS_EPOCHS; default %(default)s)")
    p.add_argument("--dataset", choices=sorted(ARCHIVES), default=DEFAULTS.dataset,
                   help="cifar100 (fine + coarse heads) or cifar10 (fine head only; default %(default)s)")
    p.add_argument("--data-dir", default=env("HKS_DATA_DIR", DEFAULTS.data_dir),
                   help="folder holding the dataset archive (env HKS_DATA_DIR; default %(default)s)")
    p.add_argument("--train-subset", type=positive_int, default=env("HKS_TRAIN_SUBSET"),
                   help="train on this many training images only, for quick runs (env HKS_TRAIN_SUBSET)")
    p.add_argument("--validation", choices=["split", "test"], default=DEFAULTS.validation,
                   help="select models on 5,000 held-out training images (split, default) or on the "
                        "test set as the classic repo did (test)")
    p.add_argument("--results-dir", default=DEFAULTS.results_dir,
                   help="folder for the per-model JSON files (default %(default)s)")
    p.add_argument("--seed", type=seed, default=DEFAULTS.seed,
                   help="seed of TPE and of weight initialization (default %(default)s)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=DEFAULTS.tensorboard,
                   help="log each model's epochs to TensorBoard/<model name>/ (make tensorboard shows them; "
                        "default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision,
                   help="float32, or mixed precision (float32 weights, float16 or bfloat16 math); auto: mixed "
                        "on GPUs and TPUs that compute it natively, float32 on CPUs (default %(default)s)")


def prune_rule(text):
    if text not in PRUNE_RULES:  # also checks HKS_PRUNE: argparse checks choices on the command line only
        raise ValueError
    return text


prune_rule.__name__ = "stopping rule (" + ", ".join(PRUNE_RULES) + ")"


def add_pruning_options(p):
    """The stopping rule of the search (only the search prunes: train.py trains its one model to the end)."""
    env = os.environ.get
    p.add_argument("--prune", type=prune_rule, choices=PRUNE_RULES, default=env("HKS_PRUNE", DEFAULTS.prune),
                   help="auto: curve where trials select on 2,000 validation images or more (the "
                        "default split has 5,000), median on fewer, where epoch-to-epoch noise would pass for "
                        "a bending curve; asha: asynchronous successive halving: at rungs of "
                        "--prune-min-epochs x --prune-eta**k epochs, only the top 1/eta of the trials that reached "
                        "the rung go on; curve: stop a "
                        "trial once its learning curve, each doubling of epochs gaining at most 1/sqrt(2) of "
                        "the one before, cannot reach the best accuracy any trial reached; median: stop a "
                        "trial after its warm-up once its best validation accuracy is below the median of the "
                        "trials run to the end, at the same epoch; none: train every trial for --epochs "
                        "(env HKS_PRUNE; default %(default)s)")
    p.add_argument("--prune-eta", type=int_from_two, default=env("HKS_PRUNE_ETA", DEFAULTS.prune_eta),
                   help="asha: the top 1/eta of the trials at a rung go on, and rungs are eta times apart "
                        "(env HKS_PRUNE_ETA; default %(default)s)")
    p.add_argument("--prune-min-epochs", type=positive_int,
                   default=env("HKS_PRUNE_MIN_EPOCHS", DEFAULTS.prune_min_epochs),
                   help="asha: epochs of the first rung (env HKS_PRUNE_MIN_EPOCHS; default %(default)s)")
