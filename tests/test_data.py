import os
import tarfile

import numpy as np
import pytest

from conftest import REAL_ARCHIVE, write_cifar10_archive, write_cifar100_archive
from data import DataError, load_dataset, load_split


def test_synthetic_archive_loads_as_uint8_images(tiny_cifar100):
    ds = load_dataset("cifar100", str(tiny_cifar100))
    assert ds.x_train.shape == (300, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (100, 32, 32, 3) and ds.x_test.dtype == np.uint8
    assert ds.x_train.flags["C_CONTIGUOUS"]
    assert (ds.nb_fine, ds.nb_coarse) == (100, 20)
    assert np.array_equal(ds.y_train_coarse, ds.y_train_fine // 5)


def test_channels_first_rows_become_height_width_channels(tmp_path):
    path = write_cifar100_archive(tmp_path, classes=[0], train_per_class=1, test_per_class=1)
    with tarfile.open(path) as tar:
        import pickle
        raw = pickle.load(tar.extractfile("cifar-100-python/train"), encoding="latin1")["data"][0]
    image = load_dataset("cifar100", str(tmp_path)).x_train[0]
    assert np.array_equal(image[:, :, 0].ravel(), raw[:1024])  # red plane first in the archive
    assert np.array_equal(image[:, :, 2].ravel(), raw[2048:])


def test_extracted_folder_is_read_like_the_archive(tmp_path, tiny_cifar100):
    extracted = tmp_path / "extracted"
    with tarfile.open(tiny_cifar100 / "cifar-100-python.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    from_folder = load_dataset("cifar100", str(extracted))
    load_dataset.cache_clear()
    from_archive = load_dataset("cifar100", str(tiny_cifar100))
    assert np.array_equal(from_folder.x_train, from_archive.x_train)


def test_cifar10_has_no_coarse_labels(tmp_path):
    write_cifar10_archive(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (500, 32, 32, 3) and ds.nb_fine == 10 and ds.nb_coarse == 0
    split = load_split("cifar10", str(tmp_path), "split", None)
    assert set(split.y_train) == {"fine_outputs"}


def test_missing_archive_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python.tar.gz.*" + str(tmp_path)):
        load_dataset("cifar100", str(tmp_path))


@pytest.mark.parametrize("keep_bytes", [100, 300_000])
def test_truncated_archive_is_a_clear_error(tmp_path, tiny_cifar100, keep_bytes):
    payload = (tiny_cifar100 / "cifar-100-python.tar.gz").read_bytes()
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(payload[:keep_bytes])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar100", str(tmp_path))


def test_split_holds_out_stratified_validation_images_always_the_same(tiny_cifar100):
    split = load_split("cifar100", str(tiny_cifar100), "split", None)
    assert len(split.x_val) == 100 and len(split.x_train) == 200
    assert np.array_equal(np.bincount(split.y_val["fine_outputs"], minlength=100), np.ones(100))
    ds = load_dataset("cifar100", str(tiny_cifar100))
    rows = lambda x: {a.tobytes() for a in x}  # noqa: E731
    assert rows(split.x_val).isdisjoint(rows(split.x_train))
    assert rows(split.x_val) | rows(split.x_train) == rows(ds.x_train)
    load_split.cache_clear()
    again = load_split("cifar100", str(tiny_cifar100), "split", None)
    assert np.array_equal(again.x_val, split.x_val)


def test_split_of_an_archive_with_some_classes_holds_out_a_tenth(tmp_path):
    write_cifar100_archive(tmp_path, classes=range(0, 100, 10), train_per_class=60)
    split = load_split("cifar100", str(tmp_path), "split", None)
    assert len(split.x_val) == 60 and len(split.x_train) == 540
    assert np.array_equal(np.bincount(split.y_val["fine_outputs"], minlength=100)[::10],
                          np.full(10, 6))


def test_train_subset_and_test_validation(tiny_cifar100):
    split = load_split("cifar100", str(tiny_cifar100), "test", 50)
    assert len(split.x_train) == 50 and split.x_val is split.x_test
    whole = load_split("cifar100", str(tiny_cifar100), "test", None)
    # no copy of the whole set
    assert whole.x_train is load_dataset("cifar100", str(tiny_cifar100)).x_train


@pytest.mark.skipif(not os.path.exists(REAL_ARCHIVE),
                    reason="real CIFAR-100 archive not present: put it in ml_req/ or set "
                           "HKS_REAL_ARCHIVE to its path")
def test_real_cifar100_archive(tmp_path):
    """The official archive, read through the restricted unpickler: it needs nothing the unpickler
    refuses."""
    ds = load_dataset("cifar100", os.path.dirname(REAL_ARCHIVE))
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert (ds.nb_fine, ds.nb_coarse) == (100, 20)
    assert np.all(np.bincount(ds.y_train_fine, minlength=100) == 500)
    assert np.all(np.bincount(ds.y_test_fine, minlength=100) == 100)
    pairs = {(f, c) for f, c in zip(ds.y_train_fine.tolist(), ds.y_train_coarse.tolist())}
    # each fine class in exactly one coarse
    assert len(pairs) == 100 and len({f for f, _ in pairs}) == 100
    assert np.all(np.bincount([c for _, c in pairs], minlength=20) == 5)
    assert 100 < ds.x_train.mean() < 150  # real photos, not blank


def set_label(key, index, value, member="train"):
    """A tamper for the archive writers: one label of one member replaced."""
    def tamper(name, batch):
        if name == member:
            batch[key][index] = value
    return tamper


@pytest.mark.parametrize("tamper, expected", [
    (set_label("fine_labels", 0, 150), "train fine_labels holds 150, outside 0..99"),
    (set_label("fine_labels", 5, -1, member="test"), "test fine_labels holds -1, outside 0..99"),
    (set_label("coarse_labels", 3, 99), "train coarse_labels holds 99, outside 0..19"),
    (lambda name,
     batch: name == "meta" and batch.update(fine_label_names=[f"f{i}" for i in range(10)]),
     "meta names 10 fine and 20 coarse classes.*100 and 20"),
    (lambda name, batch: name == "meta" and batch.update(coarse_label_names=[]),
     "meta names 100 fine and 0 coarse classes"),
    (lambda name,
     batch: name == "train" and batch.update(coarse_labels=batch["coarse_labels"][:-1]),
     "299 coarse_labels for 300 images"),
    (lambda name, batch: name == "test" and batch.update(fine_labels=batch["fine_labels"] + [0]),
     "101 fine_labels for 100 images"),
])
def test_labels_and_classes_the_model_cannot_use_are_one_line(tmp_path, tamper, expected):
    write_cifar100_archive(tmp_path, tamper=tamper)
    with pytest.raises(DataError, match=expected) as error:
        load_dataset("cifar100", str(tmp_path))
    assert "\n" not in str(error.value) and "download" in str(error.value)


def test_cifar10_label_out_of_range_and_class_count(tmp_path):
    write_cifar10_archive(tmp_path, tamper=set_label("labels", 0, 10, member="data_batch_3"))
    with pytest.raises(DataError, match="data_batch_3 labels holds 10, outside 0..9"):
        load_dataset("cifar10", str(tmp_path))
    load_dataset.cache_clear()
    write_cifar10_archive(tmp_path, tamper=lambda name, batch: name == "batches.meta"
                          and batch["label_names"].pop())
    with pytest.raises(DataError, match="meta names 9 classes.*10"):
        load_dataset("cifar10", str(tmp_path))


class RunsACommand:
    """What a hostile archive can pickle: unpickling it runs a shell command."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("member", ["meta", "train"])
@pytest.mark.parametrize("extracted", [False, True])
def test_an_archive_that_pickles_code_is_refused_and_the_code_never_runs(
        tmp_path, member, extracted):
    marker = tmp_path / "command_ran"
    path = write_cifar100_archive(
        tmp_path / "ml_req",
        tamper=lambda name, batch: name == member and batch.update(extra=RunsACommand(marker)))
    if extracted:
        with tarfile.open(path) as tar:
            tar.extractall(tmp_path / "ml_req", filter="data")
        os.remove(path)
    with pytest.raises(DataError, match=r"calls posix\.system, which was refused") as error:
        load_dataset("cifar100", str(tmp_path / "ml_req"))
    assert not marker.exists()
    assert "\n" not in str(error.value) and "download" in str(error.value)
