"""Train the classic best hyperspace for as many epochs as fit in a time budget (used by bench/gpu_check.sh).

    python3 bench/timed_training.py --data-dir ml_req --seconds 240

Prints each epoch's time, then the best validation and the test fine accuracy of the selected epoch.
The result file goes to results/timed_training/ (--results-dir) like any trial's.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from data import DataError, load_split  # noqa: E402
from record import save_result  # noqa: E402
from search_space import CLASSIC_BEST_SPACE  # noqa: E402
from settings import Settings  # noqa: E402
from trial import run_trial  # noqa: E402


class StopBeforeDeadline(keras.callbacks.Callback):
    """Print each epoch's time; stop when the next epoch would end after the deadline."""

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        took = time.time() - self.start
        print(f"epoch {epoch + 1}: {took:.1f} s, val fine accuracy {logs['val_fine_outputs_accuracy']:.4f}",
              flush=True)
        if time.time() + took > self.deadline:  # the first epoch, with its compilation, is the slowest
            self.model.stop_training = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("HKS_DATA_DIR", "ml_req"))
    p.add_argument("--seconds", type=float, required=True, help="time budget of the training, evaluation included")
    p.add_argument("--train-subset", type=int, help="train on this many images only (quick runs)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--results-dir", default=os.path.join("results", "timed_training"))
    args = p.parse_args(argv)
    settings = Settings(epochs=1000, data_dir=args.data_dir, train_subset=args.train_subset,
                        precision=args.precision, results_dir=args.results_dir)
    try:
        split = load_split("cifar100", args.data_dir, "split", args.train_subset)
    except DataError as e:
        print(f"Training skipped: {e}")
        return 0
    print(f"Classic best hyperspace on {len(split.x_train)} real CIFAR-100 images (validation: {len(split.x_val)}), "
          f"for as many epochs as fit in {args.seconds:.0f} s", flush=True)
    deadline = time.time() + args.seconds - 15  # keep time for the final test-set evaluation
    result, _ = run_trial(CLASSIC_BEST_SPACE, settings, callbacks=[StopBeforeDeadline(deadline)])
    save_result(result, settings.results_dir)
    if result["status"] != "ok":
        sys.exit(f"error: the training failed: {result['error']}")
    print(f"{result['epochs_run']} epochs in {result['train_time_s']:.0f} s ({result['precision']}); best epoch "
          f"{result['best_epoch']}: val fine accuracy {result['fine_best_accuracy']:.4f}, "
          f"test fine accuracy {result['fine_test_accuracy']:.4f}, test coarse accuracy "
          f"{result['coarse_test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
