"""Training speed of the classic best model, fed the classic way and the project's way, per precision.

    python3 bench/throughput.py --data-dir ml_req          # real CIFAR-100 if there, else synthetic images
    KERAS_BACKEND=jax python3 bench/throughput.py
    python3 bench/throughput.py --quick                     # tiny and synthetic: checks that it runs (CI)

classic: as the classic repo did, the whole training set converted on the host to float32 (scaled
         there) with one-hot float32 labels, fed to fit, float32 weights and math.
project: uint8 images and integer labels fed to fit as they are (scaling and the random flip run on
         the device, inside the model), in each precision the device computes natively.
All ways run in this one process in alternating rounds, so a busy or shared machine slows them alike;
each round's first steps (compilation, pipeline start) are not timed. images/s is the median round.
"host ms" is the host's work per batch (gathering a shuffled batch from the arrays, as Keras does
for arrays), to set against "step ms", the time of a whole training step.
"""
import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import device  # noqa: E402
import settings  # noqa: E402
from data import DataError, load_dataset  # noqa: E402
from neural_net import OPTIMIZERS, STARTING_LR, build_model  # noqa: E402
from search_space import CLASSIC_BEST_SPACE  # noqa: E402


class BatchClock(keras.callbacks.Callback):
    """The time at the end of every training batch."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


class PeakRSS:
    """Peak resident memory of this process, sampled every 50 ms (ru_maxrss never goes down)."""

    def __init__(self):
        self.peak = 0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            try:
                with open("/proc/self/statm") as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
            except OSError:
                return
            time.sleep(0.05)


def device_peak_mb():
    """Peak accelerator memory of the whole run, where the backend reports it."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax
            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**20 or None
        if backend == "tensorflow":
            import tensorflow as tf
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if backend == "torch":
            import torch
            return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    except (ValueError, RuntimeError):  # no GPU: TensorFlow has no memory info for the CPU
        return None


def load_images(data_dir, n):
    os.environ["HKS_NO_DOWNLOAD"] = "1"  # a benchmark never downloads: synthetic images stand in
    try:
        if not data_dir:
            raise DataError("no data folder given")
        ds = load_dataset("cifar100", data_dir)
        return ds.x_train[:n], ds.y_train_fine[:n], ds.y_train_coarse[:n], f"real CIFAR-100 from {data_dir}"
    except DataError:
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n, dtype=np.int32),
                rng.integers(0, 20, n, dtype=np.int32), "synthetic images (no archive in --data-dir)")


class Way:
    """One way of training: its model and the arrays it is fed."""

    def __init__(self, name, precision, x, y_fine, y_coarse):
        self.name, self.precision, self.rates, self.step_ms = name, precision, [], []
        keras.mixed_precision.set_global_policy(precision)
        start = time.perf_counter()
        if name == "classic":  # the classic repo: floats and one-hot labels made on the host, once
            self.x = x.astype("float32") / 127.5 - 1  # the same [-1, 1] as the project's in-model scaling
            self.y = {"fine_outputs": keras.utils.to_categorical(y_fine, 100),
                      "coarse_outputs": keras.utils.to_categorical(y_coarse, 20)}
            self.model = build_model(CLASSIC_BEST_SPACE, input_dtype="float32")
            space = CLASSIC_BEST_SPACE
            self.model.compile(  # the classic losses: categorical cross-entropy on one-hot labels
                optimizer=OPTIMIZERS[space["optimizer"]](learning_rate=STARTING_LR * space["lr_rate_mult"]),
                loss={"fine_outputs": "categorical_crossentropy", "coarse_outputs": "categorical_crossentropy"},
                loss_weights={"fine_outputs": 1.0, "coarse_outputs": space["coarse_labels_weight"]},
                metrics={"fine_outputs": ["accuracy"], "coarse_outputs": ["accuracy"]})
        else:
            self.x, self.y = x, {"fine_outputs": y_fine, "coarse_outputs": y_coarse}
            self.model = build_model(CLASSIC_BEST_SPACE)
        self.prep_s = time.perf_counter() - start
        keras.mixed_precision.set_global_policy("float32")
        self.input_mb = (self.x.nbytes + sum(a.nbytes for a in self.y.values())) / 2**20

    def host_ms_per_batch(self, batch_size, batches=20):
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(batches):
            idx = rng.permutation(len(self.x))[:batch_size]
            _ = self.x[idx], {k: v[idx] for k, v in self.y.items()}
        return (time.perf_counter() - start) / batches * 1000

    def run_round(self, batch_size, steps, untimed):
        clock = BatchClock()
        self.model.fit(self.x, self.y, batch_size=batch_size, epochs=1, steps_per_epoch=untimed + steps,
                       shuffle=True, verbose=0, callbacks=[clock])
        seconds = clock.ends[-1] - clock.ends[untimed - 1]
        self.rates.append(batch_size * steps / seconds)
        self.step_ms.append(seconds / steps * 1000)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("HKS_DATA_DIR", "ml_req"),
                   help="folder of cifar-100-python.tar.gz; synthetic images where it is absent (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=320, help="the classic best hyperspace's (default %(default)s)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per way (default %(default)s)")
    p.add_argument("--precisions", default="supported",
                   help="comma-separated project precisions, or 'supported' (the device's native ones, default)")
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny batches, one short round (for CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.data_dir, args.batch_size, args.steps, args.rounds = "", 16, 2, 1
    memory = PeakRSS()
    found = device.find_device()
    precisions = device.supported_precisions(found) if args.precisions == "supported" else args.precisions.split(",")
    for name in precisions:
        if name not in settings.PRECISIONS[1:]:
            sys.exit(f"error: unknown precision {name!r}: use {', '.join(settings.PRECISIONS[1:])} or supported")

    # Enough images that no round sees the same batch twice, capped at the training set.
    n = 256 if args.quick else min(50000, args.batch_size * (args.steps + 3) * args.rounds * 2)
    x, y_fine, y_coarse, source = load_images(args.data_dir, n)
    print(f"Device: {device.describe(found)}")
    print(f"Data: {len(x)} {source}; classic best hyperspace, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} timed steps per way", flush=True)
    ways = [Way("classic", "float32", x, y_fine, y_coarse)]
    ways += [Way("project", precision, x, y_fine, y_coarse) for precision in precisions]
    for r in range(args.rounds):
        for way in ways:
            way.run_round(args.batch_size, args.steps, untimed=3 if r == 0 else 1)  # first round compiles
        print(f"round {r + 1}: " + ", ".join(f"{w.name} {w.precision} {w.rates[-1]:.0f}" for w in ways)
              + " images/s", flush=True)

    base = statistics.median(ways[0].rates)
    print(f"\n{'way':<8} {'precision':<15} {'images/s':>9} {'vs classic':>10} {'step ms':>8} {'host ms':>8} "
          f"{'input MB':>9} {'prep s':>7}")
    for w in ways:
        rate = statistics.median(w.rates)
        print(f"{w.name:<8} {w.precision:<15} {rate:>9.1f} {rate / base:>9.2f}x {statistics.median(w.step_ms):>8.0f} "
              f"{w.host_ms_per_batch(args.batch_size):>8.2f} {w.input_mb:>9.0f} {w.prep_s:>7.1f}")
    peak = device_peak_mb()
    print(f"Peak memory: host {memory.peak / 2**20:.0f} MB (this process, all ways together)"
          + (f", device {peak:.0f} MB" if peak else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
