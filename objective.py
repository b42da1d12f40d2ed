"""What hyperopt calls for each trial: one training run (neural_net.build_and_train), with the search's
stopping rule (pruning.py) and, on a MongoDB worker, the heartbeat that lets the driver requeue the
trials of dead workers (lost_workers.py).

One checkpoint per epoch: a rule that publishes the running trial's progress (AshaRule.partial_result)
has it stored by hyperopt's ctrl.checkpoint, in the trial's MongoDB document on a worker (carried by
the heartbeat, which checkpoints anyway) or in the local trials object; other trials judge against it.

It lives in this importable module (not in the driver's __main__), so that hyperopt can pickle the
objective by reference for its MongoDB workers.
"""
import functools

import keras
from hyperopt.mongoexp import MongoCtrl
from hyperopt.pyll import rec_eval

from lost_workers import Heartbeat
from neural_net import build_and_train
from pruning import stopping_rules


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


def trial_callbacks(settings, ctrl):
    """The trial's stopping rule, then its one checkpoint per epoch: the heartbeat on a MongoDB worker,
    which carries the rule's partial result; locally, the partial result alone, if the rule has one.
    After the rules, so that an epoch's checkpoint carries what they recorded at that epoch."""
    callbacks = stopping_rules(settings, ctrl.trials, ctrl.current_trial["tid"])
    partial_result = partial_result_of(callbacks)
    if isinstance(ctrl, MongoCtrl):
        callbacks.append(Heartbeat(ctrl, partial_result))
    elif partial_result is not None:
        callbacks.append(PublishProgress(ctrl, partial_result))
    return callbacks


def _objective(expr, memo, ctrl, settings):
    """hyperopt passes the trial's ctrl: its id, and its view of the other trials (all workers' on MongoDB)."""
    hype_space = rec_eval(expr, memo=memo)
    return build_and_train(hype_space, settings, callbacks=trial_callbacks(settings, ctrl),
                           trial_id=ctrl.current_trial["tid"])


def make_objective(settings):
    """The objective for fmin, bound to the experiment's settings."""
    objective = functools.partial(_objective, settings=settings)
    objective.fmin_pass_expr_memo_ctrl = True  # hyperopt then calls it with (expr, memo, ctrl)
    return objective
