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
import json
import sys

from data import load_split_or_exit
from neural_net import build_and_train
from search_space import NAMED_SPACES, HyperspaceError, check_hyperspace
from settings import add_training_options, settings_from
from utils import describe, load_best_result, print_json, warn


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
            with open(name) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot read hyperspace {name!r} ({e}): pass best, classic_best, demo or a JSON file")
    if isinstance(loaded, dict) and "space" in loaded:  # a result file, of this repo or of the classic one
        loaded = loaded["space"]
    try:
        for line in check_hyperspace(loaded):
            warn(f"{name}: {line}: training it anyway")
    except HyperspaceError as e:
        sys.exit(f"error: {name}: {e}")
    return loaded


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--space", default="best",
                   help="best (of results/, default), classic_best, demo, or a JSON file: a result file or a space")
    add_training_options(p)
    p.set_defaults(tensorboard=True)  # one long run: worth watching
    args = p.parse_args(argv)
    settings = settings_from(args)
    hype_space = resolve_space(args.space, args.results_dir)
    load_split_or_exit(settings)
    result = build_and_train(hype_space, settings, save_model=True)
    summary = {k: v for k, v in result.items() if k not in ("history", "traceback")}
    print_json(summary)
    if result["status"] == "ok":
        print(f"Saved {result['model_file']} and {result['weights_file']}" +
              (f"; make tensorboard shows {result['tensorboard_dir']}" if "tensorboard_dir" in result else ""))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in piped logs as it happens
    sys.exit(main())
