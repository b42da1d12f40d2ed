"""The memory of a local search, trial after trial: the driver's resident memory (RSS) after each trial.

    python3 bench/memory.py                   # 50 tiny trials on a synthetic archive in the real format
    python3 bench/memory.py --trials 10 --quick

It runs hyperopt_optimize.py's local search in this process, in a temporary folder, on a tiny
CIFAR-100 archive written in the official format (100 classes, --per-class training images each),
1 epoch per trial, and prints after each trial the driver's RSS and its growth since the previous
trial, the RSS of the driver with its processes (the forkserver that starts the trials' processes),
the most they held during the trial (sampled every 0.2 s), and the trial's time. At the end: the
driver's mean growth per trial after the first five, and the mean time of a trial. --in-process
measures the trials trained in the driver's process instead.
"""
import argparse
import os
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from conftest import write_cifar100_archive  # noqa: E402  (tiny archives in the official format)


def rss_mb(pid="self"):
    """Resident memory of a process in MB, from /proc (Linux); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def tree_mb(pid):
    """RSS of a process and all its descendants (the forkserver and a running trial's process)."""
    total = rss_mb(pid)
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_mb(int(child)) for child in f.read().split())
    except OSError:
        pass
    return total


class PeakSampler(threading.Thread):
    """The largest RSS of this process tree, sampled every 0.2 s, since the last reset()."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self):
        while True:
            self.peak = max(self.peak, tree_mb(os.getpid()))
            time.sleep(0.2)

    def reset(self):
        peak, self.peak = self.peak, 0.0
        return peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--per-class", type=int, default=2, help="training images per class (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a tiny run (CI): 10 classes")
    p.add_argument("--in-process", action="store_true",
                   help="train the trials in the driver's process (hyperopt_optimize.TRIAL_PROCESS = False)")
    p.add_argument("--speed", type=int, metavar="ROUNDS",
                   help="instead: time one hyperspace trained ROUNDS times each way, in the driver's process "
                        "and in a trial's process, in alternation (the same load for both)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of each --speed training (default %(default)s)")
    args = p.parse_args(argv)
    if args.speed:
        return compare_speed(args)

    import hyperopt_optimize
    hyperopt_optimize.TRIAL_PROCESS = not args.in_process

    folder = tempfile.mkdtemp(prefix="hks_memory_")
    write_cifar100_archive(os.path.join(folder, "ml_req"), classes=range(10 if args.quick else 100),
                           train_per_class=args.per_class)
    os.chdir(folder)
    rows, last = [], [time.time(), rss_mb()]
    real_save = hyperopt_optimize.save_trials
    sampler = PeakSampler()
    sampler.start()

    def save_trials(trials, path):  # called once after each trial
        real_save(trials, path)
        now, rss, tree, peak = time.time(), rss_mb(), tree_mb(os.getpid()), sampler.reset()
        rows.append((len(trials.trials), rss, rss - last[1], now - last[0]))
        since_fifth = f"; {(rss - rows[4][1]) / (len(rows) - 5):+.1f} MB/trial since the 5th" if len(rows) > 5 else ""
        print(f"MEMORY trial {len(trials.trials):3d}: driver RSS {rss:7.1f} MB ({rss - last[1]:+6.1f}); "
              f"with its processes {tree:7.1f} MB, {peak:7.1f} at most during the trial; {now - last[0]:5.1f} s"
              + since_fifth, flush=True)
        last[:] = [now, rss]
    hyperopt_optimize.save_trials = save_trials

    print(f"RSS before the search: {rss_mb():.1f} MB", flush=True)
    options = ["--max-evals", str(args.trials), "--epochs", "1", "--validation", "test", "--prune", "none"]
    code = hyperopt_optimize.run_search(hyperopt_optimize.parse_args(options))
    if code != 0 or len(rows) < 7:
        sys.exit(f"error: the search ended with {code} after {len(rows)} trials")
    later = rows[5:]
    growth = (later[-1][1] - rows[4][1]) / len(later)
    print(f"\n{len(rows)} trials: RSS {rows[0][1]:.0f} MB after the first, {rows[4][1]:.0f} MB after the fifth, "
          f"{rows[-1][1]:.0f} MB after the last; growth after the first five: {growth:+.1f} MB per trial")
    print(f"Mean time of a trial: {sum(r[3] for r in rows) / len(rows):.2f} s (after the first five: "
          f"{sum(r[3] for r in later) / len(later):.2f} s)")
    return 0


def compare_speed(args):
    """One trial's time trained in this process and in a process of its own (trial_process.py), alternating."""
    from hyperopt import Trials

    import trial_process
    from search_space import CLASSIC_BEST_SPACE
    from settings import Settings
    from trial import run_trial

    folder = tempfile.mkdtemp(prefix="hks_speed_")
    write_cifar100_archive(os.path.join(folder, "ml_req"), train_per_class=args.per_class)
    os.chdir(folder)
    settings = Settings(epochs=args.epochs, validation="test", prune="none")
    trial = {"tid": 0}
    times = {"driver": [], "own process": []}
    for round_ in range(args.speed + 1):  # round 0 warms both up (the forkserver loads TensorFlow): not counted
        for way in times:
            start = time.time()
            if way == "driver":
                result, _ = run_trial(CLASSIC_BEST_SPACE, settings, trial_id=0)
            else:
                result = trial_process.train_in_process(CLASSIC_BEST_SPACE, settings, Trials(), trial)
            took = time.time() - start
            assert result["status"] == "ok", result.get("error")
            if round_:
                times[way].append(took)
            print(f"SPEED round {round_}: {way} {took:.2f} s" + ("" if round_ else " (warm-up)"), flush=True)
    mean = {way: sum(t) / len(t) for way, t in times.items()}
    print(f"\nClassic best hyperspace, {args.epochs} epoch(s) on {100 * args.per_class} images, {args.speed} rounds: "
          f"in the driver's process {mean['driver']:.2f} s, in its own process {mean['own process']:.2f} s "
          f"({mean['own process'] / mean['driver'] - 1:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
