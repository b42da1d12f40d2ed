"""One trial of the local search in a process of its own, as hyperopt's MongoDB workers run theirs.

TensorFlow keeps the graphs of every model trained in a process (the traced training step of each
trial, about 6,000 graph operations) after the model, keras.backend.clear_session() and a garbage
collection: a search that trains its trials in the driver's process grows by about 100 MB per trial
until it runs out of memory (bench/README.md, Memory). A process that ends gives all of it back.

The processes are forked from a server that has imported TensorFlow, Keras and this module once
(multiprocessing's forkserver): a trial starts in milliseconds, in a process that has run no
TensorFlow yet. It loads the dataset, trains, and sends its result back through a pipe; the driver
saves it as before. Ctrl-C reaches the driver only (utils.ctrl_c_stops): it ends the trial's process.
The picture of a new best model (model_best.png) is drawn in such a process too: Keras builds it.
A running trial's partial result (pruning.py) stays in its process: locally one trial runs at
a time, so no other trial judges against it.
"""
import multiprocessing
import os
import signal
import uuid

from hyperopt.base import Ctrl

import record
from utils import INTERRUPTED

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["trial", "objective"])  # TensorFlow and Keras load once, in the server


def _importable_in_server():
    """The forkserver imports its preload before it applies the driver's sys.path (Python 3.11): give it
    this folder by PYTHONPATH, which it inherits, so that TensorFlow loads there once and not per trial."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, paths)])


def _call(connection, function, args):
    """In the new process: function(*args), its return value sent to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides: it ends this process on Ctrl-C
    connection.send(function(*args))
    connection.close()


def call_in_process(function, *args, poll_s=0.2):
    """function(*args) in a new process; its return value. ProcessDied (a RuntimeError) if the process
    ended without one (killed: out of memory?). KeyboardInterrupt once Ctrl-C came (utils.INTERRUPTED):
    the process is ended first."""
    _importable_in_server()
    receive, send = _context.Pipe(duplex=False)
    process = _context.Process(target=_call, args=(send, function, args), name="hks-trial", daemon=True)
    process.start()
    send.close()  # the new process holds the other end: if it dies, recv sees the pipe closed
    try:
        while not receive.poll(poll_s):
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            if not process.is_alive() and not receive.poll(0):
                break
        try:
            return receive.recv()
        except EOFError:  # it ended without a result: killed (out of memory?) or crashed
            process.join()
            code = process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
            raise ProcessDied(f"its process {how}" + (" (out of memory?)" if code == -signal.SIGKILL else "")) from None
    finally:
        receive.close()
        if process.is_alive():
            process.terminate()
        process.join()


class ProcessDied(RuntimeError):
    """The process of call_in_process ended without a result."""


def train(hype_space, settings, trials, trial):
    """In the trial's process: the trial, with the stopping rule that reads the other trials."""
    from objective import run

    return run(hype_space, settings, Ctrl(trials, current_trial=trial))


def train_in_process(hype_space, settings, trials, trial):
    """Train one trial in a new process; its result, or a failed result if the process died."""
    try:
        return call_in_process(train, hype_space, settings, trials, trial)
    except ProcessDied as e:
        return record.failed_result(hype_space, f"ProcessDied: {e}", uuid.uuid4().hex[:8],
                                    **settings.recorded(), trial_id=trial["tid"])
