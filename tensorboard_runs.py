"""Every trial as a run of TensorBoard's HParams dashboard: its hyperparameters, its outcome and its
per-epoch curves, written from the result files and the trials. No training, no TensorFlow: the
events are the tensorboard package's own protobufs (its HParams summaries), in TFRecords framed as
its record writer frames them.

    python3 report.py --tensorboard                  # results/ and results.pkl into TensorBoard/trials/
    make tensorboard                                 # the same, then TensorBoard on 127.0.0.1

The folder (DIR, TensorBoard/trials by default):
    DIR/events.out.tfevents.hks-experiment   the 19 hyperparameters with their domains, and the metrics
    DIR/<model_name>/                        one trial: its hyperparameters, status and metrics
    DIR/<model_name>/train/, validation/     its per-epoch curves (epoch_loss, epoch_fine_outputs_accuracy, ...)
Each file is written under a temporary name TensorBoard ignores, then renamed; the trial's own file last.
A run with that file is complete and is not written again: rerunning adds the new trials only.
"""
import contextlib
import itertools
import json
import os
import struct
import tempfile
import time

from search_space import SPACE, Choice, Range
from utils import TEMPORARY_PREFIX, UserError, remove_stale_temporaries, warn

DEFAULT_DIR = os.path.join("TensorBoard", "trials")
EXPERIMENT_FILE = "events.out.tfevents.hks-experiment"
TRIAL_FILE = "events.out.tfevents.hks-trial"  # in each run folder, written last: the run is complete
CURVES_FILE = "events.out.tfevents.hks-curves"
STATUSES = ("ok", "pruned", "failed")
ABSENT = 0.0  # an absent block (first_conv, residual, one_more_fc of null), as report.py plots it
VAL_NOTE = ("the classic repo's results, and searches run with --validation test, measured it on the "
            "test set (column selected_on)")
# (tag of the run's one-point scalar, row key or result key, display name, description)
METRICS = [
    ("trial/val_fine_accuracy", "val_fine", "val fine accuracy",
     f"Best validation fine accuracy, what the search maximizes; {VAL_NOTE}."),
    ("trial/val_coarse_accuracy", "val_coarse", "val coarse accuracy",
     f"Best validation coarse (20 classes) accuracy; {VAL_NOTE}."),
    ("trial/test_fine_accuracy", "test_fine", "test fine accuracy",
     "The selected weights scored once on the test set (not recorded in classic results)."),
    ("trial/test_coarse_accuracy", "test_coarse", "test coarse accuracy",
     "The selected weights scored once on the test set (not recorded in classic results)."),
    ("trial/epochs_run", "epochs", "epochs run", "Epochs trained (fewer than the budget when pruned)."),
    ("trial/train_time_s", "time_s", "training time (s)", "Seconds of training."),
    ("trial/parameters", "nb_params", "parameters", "Parameters of the model (not in classic results)."),
]


def _tensorboard():
    """The modules of the tensorboard package this file needs, or an ImportError saying how to get them."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c
    except ImportError as e:
        raise ImportError(f"writing TensorBoard runs needs the tensorboard package, not TensorFlow (pip install "
                          f"tensorboard): {e}") from e
    try:  # the same checksum in C: writing 3,000 runs takes half the time
        from google_crc32c import value as crc32c
    except ImportError:
        pass
    return event_pb2, summary_pb2, api_pb2, metadata, plugin_data_pb2, summary_v2, crc32c


def _values(option):
    """The values of one option of SPACE: a literal, or a Range (kept whole), or a nested Choice's values."""
    if isinstance(option, Choice):
        return [v for o in option.options for v in _values(o)]
    return [option]


def domain(what, summary_v2):
    """The HParams domain of one key of SPACE: choices as discrete values, ranges as an interval, null as 0."""
    values = [ABSENT if v is None else v for v in _values(what)]
    ranges = [v for v in values if isinstance(v, Range)]
    if ranges:
        bounds = [b for r in ranges for b in r.bounds()] + [v for v in values if not isinstance(v, Range)]
        return summary_v2.RealInterval(float(min(bounds)), float(max(bounds)))
    if all(isinstance(v, bool) for v in values):
        return summary_v2.Discrete(values)
    if all(isinstance(v, str) for v in values):
        return summary_v2.Discrete(values)
    return summary_v2.Discrete([float(v) for v in values])


def hparam_value(value, dom):
    """A hyperparameter's value as its domain types it, or None where it does not fit (a hand-edited file)."""
    value = ABSENT if value is None else value
    if dom.dtype is bool:
        return value if isinstance(value, bool) else None
    if dom.dtype is str:
        return value if isinstance(value, str) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def experiment_hparams(summary_v2):
    hparams = [summary_v2.HParam(key, domain(what, summary_v2), description=(
        f"{what.kind}: {what}" if isinstance(what, Range) else f"{what}" + " (0: absent)" * (None in _values(what))))
        for key, what in SPACE.items()]
    hparams.append(summary_v2.HParam("status", summary_v2.Discrete(list(STATUSES)),
                                     description="ok, pruned (stopped early by the stopping rule) or failed"))
    hparams.append(summary_v2.HParam("selected_on", summary_v2.Discrete(["split", "test"]),
                                     description="the data the val accuracies were measured on: 5,000 held-out "
                                                 "training images (split), or the test set (classic repo)"))
    return hparams


class Writer:
    """Writes the runs of one folder; built once, so the domains are computed once."""

    def __init__(self, folder):
        (self.event_pb2, self.summary_pb2, self.api_pb2, self.metadata, self.plugin_data_pb2, summary_v2,
         self.crc32c) = _tensorboard()
        self.summary_v2 = summary_v2
        self.folder = folder
        self.hparams = experiment_hparams(summary_v2)
        self.domains = {h.name: h.domain for h in self.hparams}

    def write_file(self, folder, name, events):
        """events (Event protos) to folder/name, through a temporary file whose name TensorBoard skips."""
        os.makedirs(folder, exist_ok=True)
        # Named as utils.atomic_file names its temporaries, so that remove_stale_temporaries knows them;
        # without "tfevents" in the name, which TensorBoard would read.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix="_part")
        try:
            with os.fdopen(fd, "wb") as f:
                first = self.event_pb2.Event(wall_time=events[0].wall_time, file_version="brain.Event:2")
                f.write(b"".join(self.record(e.SerializeToString()) for e in [first, *events]))
            os.replace(tmp, os.path.join(folder, name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise

    def listed_metrics(self, path):
        """The metric tags of the experiment file at path (none where there is none)."""
        tags = set()
        for event in self.read_events(path):
            for value in event.summary.value:
                if value.tag == self.metadata.EXPERIMENT_TAG:
                    experiment = self.metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
                    tags.update(m.name.tag for m in experiment.metric_infos)
        return tags

    def read_events(self, path):
        """The events of a file this module wrote (records: length, its CRC, data, its CRC)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        events, at = [], 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            try:
                events.append(self.event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
            except Exception:  # noqa: BLE001 -- not a file of ours (protobuf's DecodeError): written again
                return []
            at += 12 + length + 4
        return events

    def masked_crc(self, data):
        crc = self.crc32c(data)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    def record(self, data):
        """One TFRecord, as tensorboard's RecordWriter frames it: length, its masked CRC-32C, data, its CRC."""
        length = struct.pack("<Q", len(data))
        return length + self.masked_crc(length) + data + self.masked_crc(data)

    def write_experiment(self, tags):
        """The experiment: the domains, and the metrics of tags and of those it listed already. A metric no
        trial has is left out: the parallel coordinates drop every trial that misses a shown metric."""
        path = os.path.join(self.folder, EXPERIMENT_FILE)
        listed = self.listed_metrics(path)
        metrics = [self.summary_v2.Metric(tag, display_name=shown, description=about)
                   for tag, _, shown, about in METRICS if tag in tags | listed]
        summary = self.summary_v2.hparams_config_pb(self.hparams, metrics, time_created_secs=0)
        event = self.event_pb2.Event(wall_time=0, summary=summary)
        if not tags <= listed or not os.path.exists(path):  # a running TensorBoard sees new metrics on restart
            self.write_file(self.folder, EXPERIMENT_FILE, [event])

    def _plugin_summary(self, tag, **data):
        content = self.plugin_data_pb2.HParamsPluginData(**data)
        return self.summary_pb2.Summary(value=[self.summary_pb2.Summary.Value(
            tag=tag, metadata=self.metadata.create_summary_metadata(content), tensor=self.metadata.NULL_TENSOR)])

    def scalars(self, wall_time, step, values):
        return self.event_pb2.Event(wall_time=wall_time, step=step, summary=self.summary_pb2.Summary(
            value=[self.summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in values]))

    def write_run(self, row, result):
        """One trial's run: its curves (train/, validation/), then its hyperparameters and outcome."""
        run = os.path.join(self.folder, row["name"].replace(os.sep, "_"))
        end = row["finished_at"] or time.time()
        start = end - (row["time_s"] or 0)
        curves = history_curves(result.get("history"))
        epochs = max((len(c) for sub in curves.values() for c in sub.values()), default=1)
        at = [start + (end - start) * (e + 1) / epochs for e in range(epochs)]  # wall time of each epoch
        for subrun, tags in curves.items():
            self.write_file(os.path.join(run, subrun), CURVES_FILE, [
                self.scalars(at[e], e, [(tag, c[e]) for tag, c in tags.items() if e < len(c)])
                for e in range(epochs)])

        space = row["space"] or {}
        hparams = {key: hparam_value(space[key], self.domains[key]) for key in SPACE if key in space}
        hparams = {k: v for k, v in hparams.items() if v is not None}
        hparams["status"] = row["status"]
        if row["status"] != "failed":
            hparams["selected_on"] = result.get("validation") or "test"  # absent: a classic result
        values = {**row, "nb_params": result.get("nb_params")}
        metrics = {tag: float(values[key]) for tag, key, _, _ in METRICS
                   if isinstance(values[key], (int, float)) and not isinstance(values[key], bool)}
        # The val accuracies also as the best so far after each epoch, ending on the recorded best (the
        # metrics' last values): the dashboard charts a selected trial's metrics against its epochs.
        best_so_far = {tag: list(itertools.accumulate(curve, max))[:-1] for tag, curve in (
            (tag, curves.get("validation", {}).get(f"epoch_{head}_outputs_accuracy"))
            for tag, head in (("trial/val_fine_accuracy", "fine"), ("trial/val_coarse_accuracy", "coarse")))
            if tag in metrics and curve}
        events = [self.event_pb2.Event(wall_time=start, summary=self.summary_v2.hparams_pb(
            hparams, trial_id=row["name"], start_time_secs=start))]
        events += [self.scalars(at[e], e, [(tag, c[e]) for tag, c in best_so_far.items() if e < len(c)])
                   for e in range(epochs - 1) if best_so_far]
        status = self.api_pb2.STATUS_FAILURE if row["status"] == "failed" else self.api_pb2.STATUS_SUCCESS
        events += [self.scalars(end, epochs - 1, list(metrics.items())),
                   self.event_pb2.Event(wall_time=end, summary=self._plugin_summary(
                       self.metadata.SESSION_END_INFO_TAG, session_end_info=self.plugin_data_pb2.SessionEndInfo(
                           status=status, end_time_secs=end)))]
        self.write_file(run, TRIAL_FILE, events)
        return set(metrics)


def history_curves(history):
    """{"train" or "validation": {tag: values}} of a result's history, under the tags Keras's TensorBoard
    callback writes (epoch_loss, epoch_fine_outputs_accuracy, ...), for this repo's keys and the classic
    ones alike (val_fine_outputs_acc is epoch_fine_outputs_accuracy of validation)."""
    curves = {}
    for key, values in (history or {}).items():
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        subrun, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        if name == "acc" or name.endswith("_acc"):
            name += "uracy"
        name = {"lr": "learning_rate"}.get(name, name)
        curves.setdefault(subrun, {})[f"epoch_{name}"] = [float(v) for v in values]
    return curves


def is_complete(run):
    return os.path.exists(os.path.join(run, TRIAL_FILE))


def trial_results(trials):
    """{row name: result} of the finished trials, as report.add_trials names them."""
    if trials is None:
        return {}
    return {t["result"].get("model_name") or f"trial_{t['tid']}": t["result"] for t in trials.trials
            if isinstance(t.get("result"), dict)}


def full_result(row, results):
    """The whole result of a row (its history, parameters, ...): its result file, else its trial's."""
    if row["file"]:
        try:
            with open(row["file"]) as f:
                result = json.load(f)
            if isinstance(result, dict):
                return result
        except (OSError, ValueError):
            pass  # read a moment ago: a file replaced meanwhile; the row alone still makes a run
    return results.get(row["name"]) or {}


def write_runs(rows, folder=DEFAULT_DIR, results=None):
    """Write the run of each row of report.py (read_result_files, add_trials) not yet in folder; results
    ({row name: result}) has the whole results of the rows without a result file (trial_results).

    Returns (runs written, runs already there). Raises ImportError where tensorboard is not installed.
    """
    writer = Writer(folder)
    results = results or {}
    written = kept = 0
    tags = set()
    for row in rows:
        run = os.path.join(folder, row["name"].replace(os.sep, "_"))
        if is_complete(run):
            kept += 1
            continue
        for sub in (run, os.path.join(run, "train"), os.path.join(run, "validation")):
            remove_stale_temporaries(sub)  # left by a writer killed in this run
        tags |= writer.write_run(row, full_result(row, results))
        written += 1
    writer.write_experiment(tags)
    return written, kept


def write_runs_and_say(rows, folder=DEFAULT_DIR, trials=None):
    """report.py --tensorboard: write the runs and say so in one line; UserError if it cannot."""
    start = time.time()
    try:
        written, kept = write_runs(rows, folder, trial_results(trials))
    except ImportError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot write the TensorBoard runs in {folder}/ ({e}): free space or pass "
                        f"--tensorboard another folder") from None
    print(f"TensorBoard: wrote {written} runs to {folder}/ in {time.time() - start:.1f} s ({kept} there already); "
          f"see them: make tensorboard, or tensorboard --logdir {folder} --host 127.0.0.1")


def add_trial(result, settings, folder=DEFAULT_DIR):
    """The search, after saving a trial: with --tensorboard, add its run. A failure is one warning; the search
    goes on (report.py --tensorboard writes the run later)."""
    if not settings.tensorboard:
        return
    import report  # here: the search imports report.py's reading only when it writes runs
    row = report.row(result, finished_at=time.time())
    try:
        write_runs([row], folder, {row["name"]: result})
    except (ImportError, OSError) as e:
        warn(f"the trial's TensorBoard run was not written ({e}); report.py --tensorboard writes it later")
