"""CIFAR-100 (and CIFAR-10) from the official python archives, kept as uint8.

The archive is read directly, so any copy in the official layout works, whatever its hash:
`cifar-100-python.tar.gz` holds `cifar-100-python/{train,test,meta}`, pickled dicts with
`data` (N x 3072 uint8, channels first), `fine_labels`, `coarse_labels`.
An already extracted `cifar-100-python/` folder next to the archive works too.
"""
import functools
import hashlib
import os
import pickle
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

# name: (archive, folder inside it, train members, test member, meta member, official md5)
ARCHIVES = {
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], "test", "meta",
                 "eb9058c3a382ffc7106e4002c42a8d85"),
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "c58f30108f718f92721af3b95e74349a"),
}
# (fine, coarse) classes the meta of each dataset names: the model's outputs are sized by them.
CLASSES = {"cifar100": (100, 20), "cifar10": (10, 0)}
URL = "https://www.cs.toronto.edu/~kriz/"
VALIDATION_SIZE = 5000  # images held out of the training set with --validation split
SPLIT_SEED = 0  # fixed, so every experiment on a dataset selects models on the same images


class DataError(Exception):
    """The dataset archive is missing or unreadable; the message says what to do."""


@dataclass
class Dataset:
    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train_fine: np.ndarray  # (N,) int32
    y_train_coarse: np.ndarray | None  # (N,) int32, None for CIFAR-10 (no coarse labels)
    x_test: np.ndarray
    y_test_fine: np.ndarray
    y_test_coarse: np.ndarray | None
    fine_names: list
    coarse_names: list | None

    @property
    def nb_fine(self):
        return len(self.fine_names)

    @property
    def nb_coarse(self):
        return len(self.coarse_names) if self.coarse_names else 0


def _to_images(rows):
    """(N, 3072) channels-first rows -> (N, 32, 32, 3) uint8, the one copy made at load time."""
    return np.ascontiguousarray(np.asarray(rows, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _labels(batch, member, key, count, source):
    """The labels under key as int32, checked here: a label the model has no output for fails every trial later."""
    labels = np.asarray(batch[key], dtype=np.int64)
    if labels.ndim != 1 or len(labels) != len(batch["data"]):
        raise _malformed(source, f"{member} has {labels.size} {key} for {len(batch['data'])} images")
    outside = labels[(labels < 0) | (labels >= count)]
    if len(outside):
        raise _malformed(source, f"{member} {key} holds {outside[0]}, outside 0..{count - 1} "
                                 f"(the {count} classes its meta names)")
    return labels.astype(np.int32)


def _malformed(source, what):
    return DataError(f"{source} is malformed: {what}; delete it and download it again")


def _download(url, path, md5):
    """Fetch the official archive (only when the network is reachable), checked against its md5."""
    tmp = path + ".part"
    try:
        print(f"Downloading {url} to {path} ...", flush=True)
        with urllib.request.urlopen(url, timeout=20) as response, open(tmp, "wb") as f:
            digest = hashlib.md5()
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise OSError("download is corrupt (md5 mismatch)")
        os.replace(tmp, path)
        return True
    except OSError as e:
        print(f"Download failed: {e}", flush=True)
        if os.path.exists(tmp):
            os.remove(tmp)
        return False


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles CIFAR members and nothing else: a pickle may call any global, so a hostile archive could run code.

    The official archives (Python 2 pickles) need numpy's array reconstruction only; archives re-pickled by
    Python 3 with numpy 2 name numpy._core, and protocol 2 rebuilds bytes with _codecs.encode.
    """
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def __init__(self, file, source):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"{self.source} is not a genuine CIFAR archive: a pickle in it calls {module}.{name}, "
                            f"which was refused (not run); delete it and download the official archive again")
        return super().find_class(module, name)


def _read_members(dataset, data_dir, members):
    """Unpickle the given archive members, from the archive or an extracted folder; also return the source."""
    archive, folder, *_, md5 = ARCHIVES[dataset]
    path = os.path.join(data_dir, archive)
    extracted = os.path.join(data_dir, folder)
    if not os.path.exists(path) and os.path.isdir(extracted):
        def load(member):
            with open(os.path.join(extracted, member), "rb") as f:
                return _ArchiveUnpickler(f, extracted).load()
        return [load(m) for m in members], extracted
    if not os.path.exists(path):
        offline = os.environ.get("HKS_NO_DOWNLOAD") == "1"
        if offline or not _download(URL + archive, path, md5):
            raise DataError(f"{dataset} archive not found: put {archive} (from {URL + archive}) "
                            f"at {path}, or pass --data-dir to the folder that holds it")
    with tarfile.open(path, "r:gz") as tar:
        return [_ArchiveUnpickler(tar.extractfile(f"{folder}/{m}"), path).load() for m in members], path


@functools.lru_cache(maxsize=1)
def load_dataset(dataset="cifar100", data_dir="ml_req"):
    """Load the whole dataset as uint8 images and int32 labels (cached: one load per process)."""
    if dataset not in ARCHIVES:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(ARCHIVES)}")
    _, _, train_members, test_member, meta_member, _ = ARCHIVES[dataset]
    source = os.path.join(data_dir, ARCHIVES[dataset][0])
    try:
        (meta, test, *train), source = _read_members(dataset, data_dir, [meta_member, test_member, *train_members])
        if dataset == "cifar100":
            fine_key, fine_names, coarse_names = "fine_labels", meta["fine_label_names"], meta["coarse_label_names"]
            named = f"{len(fine_names)} fine and {len(coarse_names)} coarse classes"
        else:
            fine_key, fine_names, coarse_names = "labels", meta["label_names"], []
            named = f"{len(fine_names)} classes"
        nb_fine, nb_coarse = CLASSES[dataset]
        if (len(fine_names), len(coarse_names)) != (nb_fine, nb_coarse):
            expected = f"{nb_fine} and {nb_coarse}" if nb_coarse else nb_fine
            raise _malformed(source, f"its meta names {named}, not {expected}")
        members = [*zip(train_members, train), (test_member, test)]
        fine = [_labels(b, m, fine_key, nb_fine, source) for m, b in members]
        coarse = [_labels(b, m, "coarse_labels", nb_coarse, source) for m, b in members] if nb_coarse else None
        ds = Dataset(
            x_train=_to_images(train[0]["data"] if len(train) == 1 else np.concatenate([b["data"] for b in train])),
            y_train_fine=np.concatenate(fine[:-1]),
            y_train_coarse=np.concatenate(coarse[:-1]) if coarse else None,
            x_test=_to_images(test["data"]),
            y_test_fine=fine[-1],
            y_test_coarse=coarse[-1] if coarse else None,
            fine_names=list(fine_names),
            coarse_names=list(coarse_names) if coarse else None,
        )
    except (OSError, EOFError, KeyError, ValueError, TypeError, OverflowError, pickle.UnpicklingError,
            tarfile.TarError, zlib.error) as e:
        raise DataError(f"{source} is truncated or not a {dataset} python archive ({type(e).__name__}: {e}); "
                        f"delete it and download it again") from None
    if len(ds.x_train) != len(ds.y_train_fine) or len(ds.x_test) != len(ds.y_test_fine):
        raise DataError(f"{source} is malformed: image and label counts differ; download it again")
    return ds


@dataclass
class Split:
    """Train / validation / test arrays for one experiment, all uint8 images and int32 labels."""
    x_train: np.ndarray
    y_train: dict  # {"fine_outputs": ..., "coarse_outputs": ...}
    x_val: np.ndarray
    y_val: dict
    x_test: np.ndarray
    y_test: dict
    nb_fine: int
    nb_coarse: int


def _targets(fine, coarse, index=None):
    pick = (lambda a: a) if index is None else (lambda a: a[index])
    y = {"fine_outputs": pick(fine)}
    if coarse is not None:
        y["coarse_outputs"] = pick(coarse)
    return y


@functools.lru_cache(maxsize=1)
def load_split(dataset="cifar100", data_dir="ml_req", validation="split", train_subset=None):
    """The arrays a trial trains, selects and tests on.

    validation="split" holds out VALIDATION_SIZE training images (a tenth on tiny datasets),
    stratified by fine label and always the same ones; validation="test" validates on the test
    set, as the classic repo did. train_subset=N keeps N random training images, for quick runs.
    """
    ds = load_dataset(dataset, data_dir)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(ds.x_train))
    if validation == "split":
        n_val = min(VALIDATION_SIZE, len(order) // 10)
        # Stratified: take the first n_val/classes images of each class present, in the shuffled order.
        labels = ds.y_train_fine[order]
        present = np.unique(labels)
        per_class = max(1, n_val // len(present))
        rank = np.empty(len(order), dtype=np.int64)
        for c in present:
            where = np.flatnonzero(labels == c)
            rank[where] = np.arange(len(where))
        is_val = rank < per_class
        val_idx, train_idx = np.sort(order[is_val]), order[~is_val]
    elif validation == "test":
        val_idx, train_idx = None, order
    else:
        raise ValueError(f"validation must be 'split' or 'test', not {validation!r}")
    if train_subset:
        train_idx = train_idx[:train_subset]
    test = (ds.x_test, _targets(ds.y_test_fine, ds.y_test_coarse))
    val = test if val_idx is None else (ds.x_train[val_idx], _targets(ds.y_train_fine, ds.y_train_coarse, val_idx))
    if len(train_idx) == len(ds.x_train):  # the whole training set: no copy
        train = (ds.x_train, _targets(ds.y_train_fine, ds.y_train_coarse))
    else:
        train_idx = np.sort(train_idx)  # sorted gathers read memory in order
        train = (ds.x_train[train_idx], _targets(ds.y_train_fine, ds.y_train_coarse, train_idx))
    return Split(*train, *val, *test, ds.nb_fine, ds.nb_coarse)


def clear_cache():
    """Forget the dataset and split this process loaded (load_dataset, load_split keep one each)."""
    load_split.cache_clear()
    load_dataset.cache_clear()
