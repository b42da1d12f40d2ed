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

from hyperopt_optimize import add_training_options, load_data_or_exit, settings_from
from neural_net import CLASSIC_BEST_SPACE, DEMO_SPACE, build_and_train
from utils import load_best_hyperspace, print_json

NAMED_SPACES = {"classic_best": CLASSIC_BEST_SPACE, "demo": DEMO_SPACE}


def resolve_space(name, results_dir):
    if name in NAMED_SPACES:
        return NAMED_SPACES[name]
    if name == "best":
        space = load_best_hyperspace(results_dir)
        if space is None:
            sys.exit(f"error: no result in {results_dir}/ yet: run hyperopt_optimize.py first, "
                     f"or pass --space classic_best or a JSON file")
        return space
    try:
        with open(name) as f:
            loaded = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read hyperspace {name!r} ({e}): pass best, classic_best, demo or a JSON file")
    return loaded.get("space", loaded)  # a result file holds the hyperspace under "space"


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
    load_data_or_exit(settings)
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
