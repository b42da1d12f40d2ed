"""What hyperopt calls for each trial: one training run (neural_net.build_and_train), with the search's
stopping rule (pruning.py) and, on a MongoDB worker, the heartbeat that lets the driver requeue the
trials of dead workers (lost_workers.py).

A rule that publishes the running trial's progress (AshaRule.partial_result) has it stored by hyperopt's
ctrl.checkpoint after each epoch: in the trial's MongoDB document on a worker (carried by the heartbeat's
epoch beat, which checkpoints anyway), or in the local trials object; other trials judge against it.

It lives in this importable module (not in the driver's __main__), so that hyperopt can pickle the
objective by reference for its MongoDB workers.
"""
import functools

import keras
from hyperopt.mongoexp import MongoCtrl
from hyperopt.pyll import rec_eval

from data import DataError, load_split
from lost_workers import STALE_AFTER_S, Heartbeat
from neural_net import build_and_train
from pruning import stopping_rules
from settings import DEFAULT_SETTINGS


class PublishProgress(keras.callbacks.Callback):
    """Locally: store the running trial's partial result in the trials object after each epoch."""

    def __init__(self, ctrl, partial_result):
        super().__init__()
        self.ctrl, self.partial_result = ctrl, partial_result

    def on_epoch_end(self, epoch, logs=None):
        self.ctrl.checkpoint(self.partial_result())


def partial_result_of(rules):
    """The running trial's partial result, from the rule that publishes one (None: nothing to publish)."""
    publishers = [rule.partial_result for rule in rules if hasattr(rule, "partial_result")]
    return publishers[0] if publishers else None


def validation_size(settings):
    """How many images the trial selects on (what --prune auto chooses by); the split is cached, so the
    training reads it from memory. None where it cannot be read: the training then fails with the reason."""
    settings = {**DEFAULT_SETTINGS, **settings}
    try:
        split = load_split(settings["dataset"], settings["data_dir"], settings["validation"],
                           settings["train_subset"])
    except DataError:
        return None
    return len(split.x_val)


def trial_callbacks(settings, ctrl):
    """The trial's stopping rule, then its checkpoint after each epoch: on a MongoDB worker the heartbeat
    (last: a context manager too, see _objective), whose epoch beats carry the rule's partial result;
    locally, the partial result alone, if the rule has one. After the rules, so that an epoch's
    checkpoint carries what they recorded at that epoch."""
    size = validation_size(settings) if settings.get("prune") == "auto" else None
    callbacks = stopping_rules(settings, ctrl.trials, ctrl.current_trial["tid"], size)
    partial_result = partial_result_of(callbacks)
    if isinstance(ctrl, MongoCtrl):
        callbacks.append(Heartbeat(ctrl, partial_result=partial_result,  # waits through outages that long
                                   patience_s=settings.get("stale_after", STALE_AFTER_S)))
    elif partial_result is not None:
        callbacks.append(PublishProgress(ctrl, partial_result))
    return callbacks


def _objective(expr, memo, ctrl, settings, save_result=True):
    """hyperopt passes the trial's ctrl: its id, and its view of the other trials (all workers' on MongoDB)."""
    tid = ctrl.current_trial["tid"]
    callbacks = trial_callbacks(settings, ctrl)
    if not isinstance(ctrl, MongoCtrl):
        hype_space = rec_eval(expr, memo=memo)
        return build_and_train(hype_space, settings, callbacks=callbacks, trial_id=tid, save_result=save_result)
    # On a worker: heartbeats for the whole trial, and the result in MongoDB before its file is written.
    heartbeat = callbacks[-1]
    with heartbeat:
        hype_space = rec_eval(expr, memo=memo)
        return build_and_train(hype_space, settings, callbacks=callbacks, trial_id=tid, before_saving=heartbeat.keep,
                               save_result=save_result)


def make_objective(settings, save_result=True):
    """The objective for fmin, bound to the experiment's settings. save_result=False: the caller writes each
    result file (the local search, after saving the trial to results.pkl)."""
    objective = functools.partial(_objective, settings=settings, save_result=save_result)
    objective.fmin_pass_expr_memo_ctrl = True  # hyperopt then calls it with (expr, memo, ctrl)
    return objective
