"""What hyperopt calls for each trial: one trial (trial.run_trial) with the search's stopping rule
(pruning.py) and, on a MongoDB worker, the heartbeat that lets the driver requeue the trials of
dead workers (lost_workers.py); then its result file (record.save_result).

A rule that judges against running trials (rule.publishes) has the running trial's partial result
stored by hyperopt's ctrl.checkpoint after each epoch: in the trial's MongoDB document on a worker
(carried by the heartbeat's epoch beat), or in the local trials object.

It lives in this importable module (not in the driver's __main__), so that hyperopt can pickle the
objective by reference for its MongoDB workers, which read the experiment's settings from MongoDB.
Keras is imported when a trial runs, not with this module.
"""
import functools
import json

from hyperopt.mongoexp import MongoCtrl
from hyperopt.pyll import rec_eval

import record
from data import DataError
from lost_workers import STALE_AFTER_S, Heartbeat
from pruning import stopping_rule
from mongo_search import SETTINGS
from settings import Settings


def validation_size(settings):
    """How many images the trial selects on (what --prune auto chooses by); the split is cached, so
    the training reads it from memory. None where it cannot be read: the training then fails with
    the reason."""
    try:
        return len(settings.load_split().x_val)
    except DataError:
        return None


def trial_rule(settings, ctrl):
    """The trial's stopping rule (None: none), judging against the trials ctrl sees."""
    size = validation_size(settings) if settings.prune == "auto" else None
    return stopping_rule(settings, ctrl.trials, ctrl.current_trial["tid"], size)


def publish(ctrl, rule):
    """The hook that stores the running trial's partial result locally, if its rule has one."""
    if rule is None or not rule.publishes:
        return []
    return [lambda: ctrl.checkpoint(rule.partial_result())]


def partial_result_of(rule):
    """What a running trial publishes after each epoch: its rule's partial result, or nothing."""
    return rule.partial_result if rule is not None and rule.publishes else (lambda: None)


def heartbeat_of(settings, ctrl, rule=None):
    """A MongoDB worker's heartbeat for the trial, carrying the rule's partial result, if any."""
    return Heartbeat(ctrl, partial_result=partial_result_of(rule),
                     patience_s=settings.stale_after or STALE_AFTER_S)


def run(hype_space, settings, ctrl):
    """The trial, as hyperopt's ctrl gives it (local trials or a MongoDB worker): its result.
    Keras is imported here, with the first trial."""
    tid = ctrl.current_trial["tid"]
    if not isinstance(ctrl, MongoCtrl):
        from trial import run_trial

        rule = trial_rule(settings, ctrl)
        result, _ = run_trial(hype_space, settings, rule, publish(ctrl, rule), trial_id=tid)
        return result
    # On a worker: heartbeats for the whole trial, Keras' import and data loading included; the
    # result in MongoDB before its file is written.
    with heartbeat_of(settings, ctrl) as heartbeat:
        from trial import run_trial

        rule = trial_rule(settings, ctrl)
        heartbeat.partial_result = partial_result_of(rule)
        result, _ = run_trial(hype_space, settings, rule, [heartbeat.beat], trial_id=tid)
        heartbeat.keep(result)
    record.save_result(result, settings.results_dir)
    return result


def _objective(expr, memo, ctrl, settings=None, save_result=None):
    """hyperopt passes the trial's ctrl: its id, and its view of the other trials (all workers' on
    MongoDB). settings: given locally; on MongoDB the experiment's, read from its trials.
    save_result is accepted for the objectives already pickled into experiments, which pass it
    (with their settings as a dict); where the file is written follows from ctrl alone."""
    if settings is None:
        settings = json.loads(ctrl.trials.attachments[SETTINGS])
    if isinstance(settings, dict):  # as stored in MongoDB
        settings = Settings.from_dict(settings)
    return run(rec_eval(expr, memo=memo), settings, ctrl)


def make_objective(settings=None):
    """The objective for fmin: bound to settings (the local search), or reading the experiment's
    from MongoDB (settings=None). It writes the result file on MongoDB workers only: the local
    search writes each once it has saved the trial to results.pkl."""
    objective = functools.partial(_objective, settings=settings)
    objective.fmin_pass_expr_memo_ctrl = True  # hyperopt then calls it with (expr, memo, ctrl)
    return objective
