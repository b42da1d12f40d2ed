"""Train one hyperspace, without searching: the best one found so far, the classic best, or a file.

    python3 train.py                               # retrain the best hyperspace in results/, full budget
    python3 train.py --space classic_best --epochs 5 --train-subset 10000
    python3 train.py --space results/model_0.6100_1a2b3c4d.txt.json   # a result file or a plain space JSON

It keeps the weights of the best validation epoch, scores them once on the test set, and writes,
beside the search's result files: <model_name>.txt.json (the result), <model_name>.keras (the
model, for keras.saving.load_model) and <model_name>.weights.h5 (its weights). TensorBoard logs
go to TensorBoard/<model_name>/ (--no-tensorboard turns them off; make tensorboard shows them).
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before Keras loads TensorFlow: no start-up INFO lines

from data import DataError  # noqa: E402
from record import SUFFIX, describe, load_best_result, save_result  # noqa: E402
from search_space import NAMED_SPACES, HyperspaceError, check_hyperspace  # noqa: E402
from settings import TENSORBOARD_DIR, Settings, add_training_options  # noqa: E402
from utils import UserError, check_writable, load_json_file, print_json, warn  # noqa: E402


def resolve_space(name, results_dir):
    """The hyperspace that --space names, checked against the search space; one line and exit if unusable."""
    if name in NAMED_SPACES:
        return NAMED_SPACES[name]
    if name == "best":
        best = load_best_result(results_dir)
        if best is None:
            sys.exit(f"error: no result in {results_dir}/ yet: run hyperopt_optimize.py first, "
                     f"or pass --space classic_best or a JSON file")
        print(f"Best result in {results_dir}/: {describe(best)}")
        loaded, name = best, f"the best result in {results_dir}/"
    else:
        try:
            loaded = load_json_file(name)
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot read hyperspace {name!r} ({e}): pass best, classic_best, demo or a JSON file"
                     .replace("\n", " "))
    if isinstance(loaded, dict) and "space" in loaded:  # a result file, of this repo or of the classic one
        loaded = loaded["space"]
    try:
        for line in check_hyperspace(loaded):
            warn(f"{name}: {line}: training it anyway")
    except HyperspaceError as e:
        sys.exit(f"error: {name}: {e}")
    return loaded


def saved_files(failed_path):
    """Which files of the run a failed write left in place (the model, its weights, its result file)."""
    name = os.path.basename(failed_path or "")
    suffixes = (".keras", ".weights.h5", SUFFIX)
    for suffix in suffixes:
        name = name.removesuffix(suffix)
    folder = os.path.dirname(failed_path or "")
    there = [f for f in (name + s for s in suffixes) if name and os.path.exists(os.path.join(folder, f))]
    kept = f"{', '.join(there)} {'is' if len(there) == 1 else 'are'} in {folder}/, " if there else "none was saved, "
    return kept + "the rest is not; free space and run train.py again."


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--space", default="best",
                   help="best (of results/, default), classic_best, demo, or a JSON file: a result file or a space")
    add_training_options(p)
    p.set_defaults(tensorboard=True)  # one long run: worth watching
    args = p.parse_args(argv)
    settings = Settings.from_args(args)
    hype_space = resolve_space(args.space, settings.results_dir)
    try:
        return train_and_save(hype_space, settings)
    except (UserError, DataError) as e:
        sys.exit(f"error: {e}")


def train_and_save(hype_space, settings):
    """Train hype_space to the end, save the model and its result file; the exit status."""
    from trial import run_trial, save_model_files  # Keras loads here

    check_writable(settings.results_dir, "train.py writes the model and its result file there: free "
                                         "space or fix the folder, or pass --results-dir another folder")
    if settings.tensorboard:
        check_writable(TENSORBOARD_DIR, "train.py logs the training there: move what is in the way, or "
                                        "pass --no-tensorboard")
    settings.load_split()
    result, model = run_trial(hype_space, settings)
    try:
        if model is not None:
            result.update(save_model_files(model, result["model_name"], settings.results_dir))
        save_result(result, settings.results_dir)
    except OSError as e:  # a write failed after training (a full disk): say what is saved, in one line
        sys.exit(f"error: {e}. The trained model's files are not all saved: {saved_files(e.filename)}")
    summary = {k: v for k, v in result.items() if k not in ("history", "traceback")}
    print_json(summary)
    if result["status"] == "ok":
        print(f"Saved {result['model_file']} and {result['weights_file']}" +
              (f"; make tensorboard shows {result['tensorboard_dir']}" if "tensorboard_dir" in result else ""))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    sys.exit(main())
