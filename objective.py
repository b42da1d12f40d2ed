"""What hyperopt calls for each trial: one training run (neural_net.build_and_train), with the search's
stopping rule (pruning.py) and, on a MongoDB worker, the heartbeat that lets the driver requeue the
trials of dead workers (lost_workers.py).

It lives in this importable module (not in the driver's __main__), so that hyperopt can pickle the
objective by reference for its MongoDB workers.
"""
import functools

from hyperopt.mongoexp import MongoCtrl
from hyperopt.pyll import rec_eval

from lost_workers import Heartbeat
from neural_net import build_and_train
from pruning import stopping_rules


def _objective(expr, memo, ctrl, settings, save_result=True):
    """hyperopt passes the trial's ctrl: its id, and its view of the other trials (all workers' on MongoDB)."""
    tid = ctrl.current_trial["tid"]
    if not isinstance(ctrl, MongoCtrl):
        hype_space = rec_eval(expr, memo=memo)
        return build_and_train(hype_space, settings, callbacks=stopping_rules(settings, ctrl.trials), trial_id=tid,
                               save_result=save_result)
    # On a worker: heartbeats for the whole trial, and the result in MongoDB before its file is written.
    with Heartbeat(ctrl) as heartbeat:
        hype_space = rec_eval(expr, memo=memo)
        callbacks = [*stopping_rules(settings, ctrl.trials), heartbeat]
        return build_and_train(hype_space, settings, callbacks=callbacks, trial_id=tid, before_saving=heartbeat.keep,
                               save_result=save_result)


def make_objective(settings, save_result=True):
    """The objective for fmin, bound to the experiment's settings. save_result=False: the caller writes each
    result file (the local search, after saving the trial to results.pkl)."""
    objective = functools.partial(_objective, settings=settings, save_result=save_result)
    objective.fmin_pass_expr_memo_ctrl = True  # hyperopt then calls it with (expr, memo, ctrl)
    return objective
