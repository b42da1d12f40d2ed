"""Look at a search: a leaderboard sorted by accuracy, and pictures that show which ranges to
narrow.

    python3 report.py                           # results/ and results.pkl
    python3 report.py --results-dir results/demo --trials-file results/demo/results.pkl
    python3 report.py --models                  # also draw model_demo.png and model_best.png
    python3 report.py --tensorboard             # also every trial in TensorBoard/trials/ (HParams)
    python3 report.py --mongo mongo://localhost:27017/hks/jobs --exp-key cifar100  # from MongoDB

It reads every result file in the results folder (this repo's and the classic repo's) and the
trials, prints the leaderboard, and writes into the results folder:
    hyperparameters_scatter_matrix.png  every numeric hyperparameter and the accuracy, pairwise
    accuracy_vs_hyperparameters.png     the accuracy against each hyperparameter, one panel each
    search_history.png                  the accuracy of each trial in the order they ran, and the
                                        best so far; below, the epochs each ran, and the epoch
                                        where pruning stopped it
"Accuracy" is the best validation fine accuracy of a model, what the search maximizes. Each file is
read once and Keras is not imported (unless --models), so thousands of result files take seconds.
"""
import argparse
import collections
import glob
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
# --models loads Keras: no TensorFlow start-up INFO lines
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR  # noqa: E402

import mongo_search  # noqa: E402
import tensorboard_runs  # noqa: E402
import record  # noqa: E402
from utils import (UserError, atomic_file, duration, load_json_file, load_trials,  # noqa: E402
                   remove_stale_temporaries)

ACCURACY = "val fine accuracy"
# The leaderboard's hyperparameter columns: (space key, title, format).
KEY_HYPERPARAMETERS = [("optimizer", "opt", "{}"), ("lr_rate_mult", "lr_mult", "{:.2f}"),
                       ("batch_size", "batch", "{:.0f}"), ("pooling_type", "pooling", "{}"),
                       ("nb_conv_pool_layers", "stages", "{}"), ("residual", "res", "{:.0f}"),
                       ("conv_hiddn_units_mult", "width", "{:.2f}"), ("use_BN", "BN", "{}")]


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value):
    return is_number(value) and math.isfinite(value)


# The values the report computes with or formats, by key, and what each must be (absent or null is
# fine).
RESULT_TYPES = {
    **dict.fromkeys(["fine_best_accuracy", "coarse_best_accuracy", "fine_test_accuracy",
                     "coarse_test_accuracy",
                     "train_time_s", "epochs_run", "epochs_budget"], ("a number", is_finite)),
    "trial_id": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    **dict.fromkeys(["model_name", "dataset", "error"], ("a string", lambda v: isinstance(v, str))),
    **dict.fromkeys(["space", "history"], ("an object", lambda v: isinstance(v, dict))),
}


def wrong_type(result):
    """Why the report cannot use a result (a value of the wrong type would crash it), or None."""
    for key, (kind, ok) in RESULT_TYPES.items():
        if result.get(key) is not None and not ok(result[key]):
            return f"{key} is not {kind}"
    for key in ("fine_best_accuracy", "coarse_best_accuracy", "fine_test_accuracy",
                "coarse_test_accuracy"):
        if result.get(key) is not None and not 0 <= result[key] <= 1:
            return f"{key} is {result[key]:g}, not an accuracy from 0 to 1"
    space = result.get("space") or {}
    for key, _, spec in KEY_HYPERPARAMETERS:
        if spec != "{}" and space.get(key) is not None and not isinstance(space[key], (int, float)):
            return f"space.{key} is not a number"  # the leaderboard formats it as one
    if not isinstance((result.get("history") or {}).get("loss", []), list):
        return "history.loss is not a list"
    return None


def row(result, trial=None, finished_at=0.0):
    """One model of the report, from a result dict of this repo or of the classic one."""
    ok = result.get("status") == "ok"
    pruned = result.get("pruned")  # the pruning of bad trials records "pruned": true and the epoch
    epochs = result.get("epochs_run") or len((result.get("history") or {}).get("loss", ())) or None
    return {
        "name": result.get("model_name") or f"trial_{trial}",
        "trial": result.get("trial_id") if trial is None else trial,
        "status": "ok" if ok and not pruned else "pruned" if ok else "failed",
        "val_fine": result.get("fine_best_accuracy") if ok else None,
        "val_on_test": record.selected_on(result) == "test",
        "val_coarse": result.get("coarse_best_accuracy") if ok else None,
        # None in classic files: they validated on the test set
        "test_fine": result.get("fine_test_accuracy"),
        "test_coarse": result.get("coarse_test_accuracy"),
        "epochs": epochs,
        "pruned_at": result.get("pruned_at_epoch") or epochs if pruned else None,
        "budget": result.get("epochs_budget") if is_number(result.get("epochs_budget")) else None,
        "time_s": result.get("train_time_s"),
        "space": result.get("space") or {},
        "dataset": result.get("dataset", "cifar100"),
        "error": result.get("error"),
        "finished_at": finished_at,
        "file": None,
    }


def read_result_files(results_dir):
    """{model name: row} of every result file in results_dir, and the files that could not be
    read."""
    rows, unreadable = {}, []
    for path in sorted(glob.glob(os.path.join(glob.escape(results_dir), "*" + record.SUFFIX))):
        try:
            result = load_json_file(path)
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            unreadable.append(f"{os.path.basename(path)} ({type(e).__name__})")
            continue
        if why := wrong_type(result):
            unreadable.append(f"{os.path.basename(path)} ({why})")
            continue
        result.setdefault("model_name", os.path.basename(path)[:-len(record.SUFFIX)])
        r = rows[result["model_name"]] = row(result, finished_at=os.path.getmtime(path))
        r["file"] = path
    return rows, unreadable


def add_trials(trials, rows):
    """Add the finished trials of a hyperopt Trials (local or MongoDB) to rows.

    Returns how many trials are unfinished, and the result files dropped as orphans: a kill between
    a trial's result file and the save of the trials re-runs that trial (same trial id, new model
    name), so a file of a finished trial under another name than the trial's is the same trial
    again.
    """
    unfinished, names = 0, {}
    for t in trials.trials:
        # the objective raised (it catches its own failures, so rarely)
        if t["state"] == JOB_STATE_ERROR:
            result = {"status": "fail", "model_name": f"trial_{t['tid']}_error",
                      "error": str(t["misc"].get("error"))}
        elif t["state"] != JOB_STATE_DONE:  # queued or running (MongoDB)
            unfinished += 1
            continue
        else:
            result = t["result"]
        # a result the report cannot rank (an infinite accuracy, say): failed
        if why := wrong_type(result):
            result = {"status": "fail", "model_name": f"trial_{t['tid']}_unusable",
                      "error": f"unusable result: {why}"}
        done = t.get("refresh_time")
        r = row(result, trial=t["tid"], finished_at=done.timestamp() if done else 0.0)
        # a result file of the same model is the same model
        rows.setdefault(r["name"], r)["trial"] = t["tid"]
        names[t["tid"]] = r["name"]
    orphans = [name for name, r in rows.items()
               if r["file"] and r["trial"] in names and names[r["trial"]] != name]
    return unfinished, [os.path.basename(rows.pop(name)["file"]) for name in orphans]


def run_order(r):
    """Search trials by hyperopt trial id, then the rest (classic files, train.py runs) by the time
    they finished."""
    return (r["trial"] is None, r["trial"] or 0, r["finished_at"], r["name"])


def fmt(value, spec="{}"):
    return "-" if value is None else spec.format(value)


def leaderboard(rows, top):
    """The table, best validation fine accuracy first."""
    ranked = sorted((r for r in rows if r["val_fine"] is not None),
                    key=lambda r: (-r["val_fine"], r["name"]))
    titles = ["rank", "trial", "val_fine", "val_coarse", "test_fine", "test_coarse", "epochs",
              "time", *(title for _, title, _ in KEY_HYPERPARAMETERS), "model"]
    table = [titles]
    for rank, r in enumerate(ranked[:top or None], 1):
        epochs = f"{r['pruned_at']} pruned" if r["status"] == "pruned" else fmt(r["epochs"])
        # numbered as the search prints it: from 1
        trial = None if r["trial"] is None else r["trial"] + 1
        table.append([str(rank), fmt(trial), fmt(r["val_fine"], "{:.4f}"),
                      fmt(r["val_coarse"], "{:.4f}"), fmt(r["test_fine"], "{:.4f}"),
                      fmt(r["test_coarse"], "{:.4f}"), epochs, duration(r["time_s"]),
                      *(fmt(r["space"].get(key), spec) for key, _, spec in KEY_HYPERPARAMETERS),
                      r["name"]])
    widths = [max(len(line[i]) for line in table) for i in range(len(titles))]
    lines = ["  ".join(cell.rjust(w) if i < len(titles) - 1 else cell
                       for i, (cell, w) in enumerate(zip(line, widths))) for line in table]
    on_test = sum(r["val_on_test"] for r in ranked[:top or None])
    if on_test:
        lines.append(f"val_* of {on_test} of these models: measured on the test set, which they "
                     "were selected on (the classic repo's results, and --validation test)")
    return lines, ranked


def as_number(value):
    """Hyperparameter values for plotting: an absent block (None) is 0, a boolean is 0 or 1, a
    choice stays a string."""
    if value is None:
        return 0.0
    if isinstance(value, (bool, int, float)):
        return float(value)
    return str(value)


def hyperparameter_frame(finished):
    """One row per finished model: its hyperparameters and its accuracy (last column)."""
    frame = pd.DataFrame([{k: as_number(v) for k, v in r["space"].items()} for r in finished])
    frame = frame.apply(lambda c: pd.to_numeric(c) if all(isinstance(v, float) for v in c.dropna())
                        else c.astype(str))
    frame[ACCURACY] = [r["val_fine"] for r in finished]
    return frame


def save_figure(fig, path, dpi):
    try:
        with atomic_file(path) as tmp:  # a reader never sees half a picture
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path


def plot_scatter_matrix(frame, path):
    """Every numeric hyperparameter and the accuracy, pairwise (lower triangle), histograms on the
    diagonal."""
    # the accuracy is the last one
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "fi"]
    n = len(numeric)
    fig = plt.figure(figsize=(1.1 * n + 1, 1.1 * n + 1))
    grid = fig.add_gridspec(n, n, left=0.12, bottom=0.11, right=0.99, top=0.97, wspace=0.05,
                            hspace=0.05)
    # Points grouped by accuracy quartile, best drawn last: one marker set per group draws many
    # times faster than one colour per point, and thousands of models in a hundred panels stay
    # seconds.
    rank = frame[ACCURACY].rank(method="first").to_numpy()
    quartile = ((rank - 1) * 4 // len(frame)).astype(int)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, 4))
    for i, y in enumerate(numeric):
        for j, x in enumerate(numeric[:i + 1]):
            ax = fig.add_subplot(grid[i, j])
            if i == j:
                ax.hist(frame[x].dropna(), bins=15, color="grey")
            else:
                for q in range(4):
                    ax.plot(frame[x][quartile == q], frame[y][quartile == q], "o", ms=3, mew=0,
                            color=colours[q])
            # Tick labels on the outer panels only: over a hundred labelled axes would be
            # unreadable.
            ax.tick_params(labelsize=5, length=2)
            if i < n - 1:
                ax.set_xticks([])
            else:
                ax.set_xlabel(x, rotation=90, fontsize=7)
            if j > 0 or i == 0:
                ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(y, rotation=0, ha="right", va="center", fontsize=7)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[q], label=label)
               for q, label in zip((3, 2, 1, 0), ("best 25%", "50-75%", "25-50%", "worst 25%"))]
    fig.legend(handles=handles, title=f"{ACCURACY}", loc="upper right", bbox_to_anchor=(0.97, 0.9),
               fontsize=10)
    fig.suptitle(f"Hyperparameters of {len(frame)} models, pairwise (an absent block is 0; "
                 "histograms on the diagonal)", fontsize=11)
    return save_figure(fig, path, dpi=72)


def plot_accuracy_vs_hyperparameters(frame, trial_rank, path):
    """One panel per hyperparameter: the accuracy against its value; colour = trial order (dark =
    early)."""
    keys = [c for c in frame.columns if c != ACCURACY]
    ncols = 5
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), sharey=True,
                             squeeze=False)
    # spreads the points of one choice
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(frame))
    for ax, key in zip(axes.flat, keys):
        values = frame[key]
        if values.dtype.kind in "fi" and values.nunique() <= 5 and (values.dropna() % 1 == 0).all():
            x = values + jitter  # a few whole numbers (kernel sizes, stages, an absent block as 0)
            ax.set_xticks(sorted(values.dropna().unique()))
        elif values.dtype.kind in "fi":
            x = values
        else:
            choices = sorted(values.unique())
            x = values.map({c: i for i, c in enumerate(choices)}) + jitter
            ax.set_xticks(range(len(choices)), choices, fontsize=7)
        ax.scatter(x, frame[ACCURACY], c=trial_rank, cmap="viridis", s=16, linewidths=0)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ACCURACY, fontsize=8)
    fig.suptitle(f"{ACCURACY} against each hyperparameter, {len(frame)} models (colour: trial "
                 "order, dark = early)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=72)


def pruning_savings(rows):
    """(epochs trained, trials pruned, epochs pruning saved: their budgets less what they ran) of
    the finished rows."""
    done = [r for r in rows if r["status"] != "failed" and r["epochs"] is not None]
    pruned = [r for r in done if r["status"] == "pruned" and r["budget"] is not None]
    return (sum(r["epochs"] for r in done), len(pruned),
            sum(max(0, r["budget"] - r["epochs"]) for r in pruned))


def plot_history(runs, path):
    """The accuracy of each trial in the order they ran, and the best so far; below, the epochs each
    trial ran, and for a pruned trial the epoch where it was stopped (its budget dashed)."""
    x = np.arange(1, len(runs) + 1)
    accuracy = np.array([np.nan if r["val_fine"] is None else r["val_fine"] for r in runs])
    fig, (ax, below) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True,
                                    gridspec_kw={"height_ratios": [2, 1]})
    for status, style in (("ok", dict(color="tab:blue", marker="o")),
                          ("pruned", dict(color="grey", marker="o")),
                          ("failed", dict(color="tab:red", marker="x"))):
        where = np.array([r["status"] == status for r in runs])
        if where.any():
            # failed: no accuracy, drawn at 0
            y = np.zeros(where.sum()) if status == "failed" else accuracy[where]
            ax.scatter(x[where], y, s=16, label=f"{status} ({where.sum()})", **style)
    ax.step(x, np.fmax.accumulate(accuracy), where="post", color="tab:orange", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ACCURACY)
    ax.set_title(f"Search history: {len(runs)} trials, best {np.nanmax(accuracy):.4f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    epochs = np.array([r["epochs"] or 0 for r in runs])
    pruned = np.array([r["status"] == "pruned" for r in runs])
    below.bar(x[~pruned], epochs[~pruned], color="tab:blue", width=0.8, label="ran its budget")
    if pruned.any():
        budget = np.array([r["budget"] or r["epochs"] or 0 for r in runs])
        below.bar(x[pruned], budget[pruned], color="none", edgecolor="grey", linestyle="--",
                  width=0.8, label="budget")
        below.bar(x[pruned], epochs[pruned], color="grey", width=0.8,
                  label="stopped by pruning at that epoch")
        for xi, e in zip(x[pruned], epochs[pruned]):
            below.annotate(str(e), (xi, e), ha="center", va="bottom", fontsize=6)
    trained, n_pruned, saved = pruning_savings(runs)
    below.set_title(f"Epochs each trial ran: {trained} in all" +
                    (f"; pruning stopped {n_pruned} trials, saving {saved} epochs" if n_pruned
                     else ""), fontsize=9)
    below.set_xlabel("trial (in the order they ran)")
    below.set_ylabel("epochs")
    below.yaxis.set_major_locator(MaxNLocator(integer=True))
    below.set_ylim(0, max(epochs.max(initial=0),
                          max((r["budget"] or 0 for r in runs), default=0), 1) * 1.4)
    below.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def write_figures(rows, folder):
    """Draw the three pictures into folder; yield (path, None) for each written, (path, why) for
    each not."""
    runs = sorted(rows, key=run_order)
    finished = [r for r in runs if r["val_fine"] is not None]
    frame = hyperparameter_frame(finished)
    figures = [("hyperparameters_scatter_matrix.png",
                lambda path: plot_scatter_matrix(frame, path)),
               ("accuracy_vs_hyperparameters.png",
                lambda path: plot_accuracy_vs_hyperparameters(
                    frame, np.arange(len(finished)), path)),
               ("search_history.png", lambda path: plot_history(runs, path))]
    for name, draw in figures:
        path = os.path.join(folder, name)
        try:
            draw(path)
        except Exception as e:  # noqa: BLE001 -- a folder in the way, a read-only folder, values it cannot plot
            plt.close("all")
            yield path, f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        else:
            yield path, None


def draw_models(best, folder):
    """model_demo.png and model_best.png, with Keras (imported here only). Returns False if one was
    not drawn."""
    from trial import try_draw_model
    from search_space import DEMO_SPACE
    drawn = True
    for name, space, dataset in (("model_demo.png", DEMO_SPACE, "cifar100"),
                                 ("model_best.png", best["space"], best["dataset"])):
        path = os.path.join(folder, name)
        if try_draw_model(space, path, dataset):
            print(f"Drew {path}")
        else:
            drawn = False
    return drawn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--results-dir", default="results",
                   help="folder of the result files (default %(default)s)")
    p.add_argument("--trials-file", default="results.pkl",
                   help="pickled trials of the search, read where it exists (default %(default)s)")
    p.add_argument("--mongo", metavar="URL", help="read the trials from MongoDB instead, e.g. "
                                                  "mongo://localhost:27017/hks/jobs (with "
                                                  "--exp-key)")
    p.add_argument("--exp-key", help="the experiment's name in MongoDB")
    p.add_argument("--top", type=int, default=20,
                   help="rows of the leaderboard, 0 for all (default %(default)s)")
    p.add_argument("--tensorboard", nargs="?", const=tensorboard_runs.DEFAULT_DIR, metavar="DIR",
                   help="also write each trial as a run of TensorBoard's HParams dashboard into "
                        "DIR (default %(const)s); rerun it to add new trials (tensorboard_runs.py)")
    p.add_argument("--models", action="store_true",
                   help="also draw model_demo.png and model_best.png (imports Keras: "
                        "a few seconds more)")
    args = p.parse_args(argv)
    if bool(args.mongo) != bool(args.exp_key):
        p.error("--mongo and --exp-key go together")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        return report(args)
    except UserError as e:
        sys.exit(f"error: {e}")


def report(args):
    """Print the leaderboard and write the pictures (and runs) the options ask for: the exit
    status."""
    stale = remove_stale_temporaries(args.results_dir)
    if stale:
        print(f"Removed {len(stale)} temporary files left by writes killed midway: "
              f"{', '.join(stale[:5])}")
    rows, unreadable = read_result_files(args.results_dir)
    sources = [f"{args.results_dir}/"]
    trials = None
    if args.mongo:
        try:
            trials = mongo_search.connect(args.mongo, args.exp_key)
        except mongo_search.Unusable as e:
            sys.exit(f"error: {e}")
        sources.append(f"{mongo_search.shown(args.mongo)} ({args.exp_key})")
    elif os.path.exists(args.trials_file):
        trials = load_trials(args.trials_file,
                             "pass --trials-file, or move it away to report on the result "
                             "files alone")
        sources.append(args.trials_file)
    unfinished, orphans = add_trials(trials, rows) if trials is not None else (0, [])
    rows = list(rows.values())
    if not rows:
        sys.exit(f"error: no results in {' nor '.join(sources)}: run hyperopt_optimize.py first, "
                 f"or pass --results-dir and --trials-file")
    if args.tensorboard:
        tensorboard_runs.write_runs_and_say(rows, args.tensorboard, trials)

    counts = collections.Counter(r["status"] for r in rows)
    lines, ranked = leaderboard(rows, args.top)
    print(f"{' and '.join(sources)}: {len(rows)} models, {counts['ok']} ok, {counts['pruned']} "
          f"pruned, {counts['failed']} failed"
          + (f"; {unfinished} trials queued or running" if unfinished else ""))
    trained, n_pruned, saved = pruning_savings(rows)
    if trained:
        budgets = trained + saved
        print(f"Epochs trained: {trained}" + (f"; pruning stopped {n_pruned} trials early and "
                                              f"saved {saved} epochs ({saved / budgets:.1%} of "
                                              f"their budgets' {budgets})" if n_pruned else
                                              "; none pruned"))
    if unreadable:
        print(f"{len(unreadable)} unreadable result files skipped: {', '.join(unreadable[:5])}")
    if orphans:
        print(f"{len(orphans)} result files of interrupted runs not counted (their trial ran "
              f"again, saved in the trials): {', '.join(orphans[:5])}")
    if counts["failed"]:
        errors = collections.Counter((r["error"] or "unknown").split(":")[0]
                                     for r in rows if r["status"] == "failed")
        print("Failed: " + ", ".join(f"{n} {error}" for error, n in errors.most_common()))
    if not ranked:
        print("No model has finished successfully yet.")
        return 0
    print("\nBy best validation fine accuracy (test: the selected weights, scored once on the test "
          f"set; top {min(len(ranked), args.top or len(ranked))} of {len(ranked)}):")
    print("\n".join(lines) + "\n")
    best = ranked[0]
    if best["file"]:
        print(f"Best: {best['file']}; retrain it for the full budget: python3 train.py --space "
              f"{best['file']}")
    drawn = True
    for path, why in write_figures(rows, args.results_dir):
        if why is None:
            print(f"Wrote {path}")
        else:
            drawn = False
            print(f"warning: could not write {path} ({why})", file=sys.stderr, flush=True)
    if args.models and not draw_models(best, args.results_dir):
        return 1
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
