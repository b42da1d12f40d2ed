"""The small helpers every script shares: atomic writes, the pickled trials and their lock, Ctrl-C,
durations, warnings, and the error a user must fix (UserError)."""
import contextlib
import glob
import json
import math
import os
import pickle
import re
import signal
import sys
import tempfile
import threading
import time

import filelock
from hyperopt import Trials

# The temporaries of atomic_file: .tmp_hks_<8 random characters of mkstemp>_<name of the file written>.
# Only names of this form are ever removed as left by killed writes: a user's .tmp_notes stays.
TEMPORARY_PREFIX = ".tmp_hks_"
TEMPORARY_NAME = re.compile(re.escape(TEMPORARY_PREFIX) + r"[a-z0-9_]{8}_.+")


class UserError(Exception):
    """What the user must fix before the run can go on (a folder, a file, an option); the message
    says what to do. The scripts print it as one line and exit 1."""


def print_json(result):
    print(json.dumps(result, indent=4, sort_keys=True, default=str))


def _fsync(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path` (same extension) to write; renamed to `path` if the block succeeds,
    removed if it fails: a crash never leaves half a file, and a reader sees the old file or the new one.

    The new file is flushed to disk (fsync) before the rename and the folder after it, so that a power
    loss too leaves the old file or the whole new one. A failed write (a full disk) raises an OSError
    that names `path`, not its temporary. Where `path` is a symbolic link, the file it points to is
    replaced (written through the link), and the link stays.
    """
    if os.path.islink(path):
        path = os.path.realpath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix="_" + os.path.basename(path))
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private (0600); results are for everyone sharing the folder
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder; the file is complete anyway
            _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, path) from e  # the same subclass (FileNotFoundError, ...) for its errno
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def atomic_write(path, write, mode="w"):
    """Write a file through write(f) on a temporary sibling, then a rename (atomic_file)."""
    with atomic_file(path) as tmp, open(tmp, mode) as f:
        write(f)


# Set by the first Ctrl-C of a local search (ctrl_c_stops). The handler raises nothing: an exception raised
# at a random point is lost in a garbage-collection callback or turned into another error by the library it
# lands in (a trial recorded as failed). The search checks it at safe points: raise_if_interrupted.
INTERRUPTED = threading.Event()


@contextlib.contextmanager
def ctrl_c_stops():
    """In the block, Ctrl-C (SIGINT) sets INTERRUPTED, once or many times; raise_if_interrupted stops the work."""
    def remember(signum, frame):
        INTERRUPTED.set()
    INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted():
    """KeyboardInterrupt once Ctrl-C came (ctrl_c_stops): called where the work can stop cleanly."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def trials_lock(trials_file):
    """The lock of one search's trials file: a FileLock on <trials_file>.lock. It is an flock, which the
    OS drops when its process ends, killed or crashed: the .lock file stays, and never blocks a new driver."""
    return filelock.FileLock(trials_file + ".lock")


def check_writable(folder, what):
    """Create `folder` if needed and write a small file in it, before any training: a read-only or full
    disk, a missing permission, or a path under a file is a UserError (ending with `what`), not a
    lost trial.

    A real write, not os.access: root passes os.access on a read-only mount, and no check of rights sees
    a full disk. The probe is an unnamed file (O_TMPFILE where Linux has it), and the folders the check
    made are removed again: it leaves nothing behind (the first write makes them for good).
    """
    made = [p for p in _ancestors(folder) if not os.path.exists(p)]
    try:
        os.makedirs(folder or ".", exist_ok=True)
        with tempfile.TemporaryFile(dir=folder or ".") as probe:
            probe.write(bytes(4096))
            probe.flush()
    except OSError as e:
        blocker = next((p for p in _ancestors(folder) if os.path.exists(p) and not os.path.isdir(p)), None)
        reason = f"{blocker} is a file, not a folder" if blocker else f"{type(e).__name__}: {e.strerror or e}"
        raise UserError(f"cannot write in {folder or '.'}/ ({reason}): {what}") from None
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _ancestors(folder):
    """folder, its parent, ... up to the first relative or root component: a/b/c -> a, a/b, a/b/c."""
    parts = []
    while folder and folder not in parts and folder != os.path.dirname(folder):
        parts.append(folder)
        folder = os.path.dirname(folder)
    return reversed(parts)


def warn(message):
    """One line on stderr: something was not done, and the run goes on."""
    print(f"warning: {message}".replace("\n", " "), file=sys.stderr, flush=True)


def duration(seconds):
    """12 s, 25 min, 3.5 h; - when unknown."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def non_finite(value, where=""):
    """The path (history.loss[3]) of the first NaN or infinite number in a result's dicts and lists, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def remove_stale_temporaries(folder, older_than_s=1800):
    """Remove the temporaries atomic_file left in folder when killed mid-write (SIGKILL skips its cleanup).

    Only files named as atomic_file names them (TEMPORARY_NAME: other .tmp_* files may be a user's), and
    only those untouched for older_than_s: a write takes seconds, so a concurrent writer's file is never
    removed. Returns the names removed.
    """
    removed = []
    now = time.time()
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), TEMPORARY_PREFIX + "*"))):
        try:
            ours = TEMPORARY_NAME.fullmatch(os.path.basename(path)) and os.path.isfile(path)
            if ours and not os.path.islink(path) and now - os.path.getmtime(path) > older_than_s:
                os.remove(path)
                removed.append(os.path.basename(path))
        except OSError:  # removed by another cleaner meanwhile, or a folder we may not write to: leave it
            continue
    return removed


MAX_JSON_BYTES = 16 * 2**20  # a result file of 1,000 epochs is under 1 MB; a hyperspace, under 1 kB


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def load_json_file(path, max_bytes=MAX_JSON_BYTES):
    """A result or hyperspace file: ValueError (one line) if it is larger than max_bytes (/dev/zero reads
    forever), not JSON, nested too deeply, or holds NaN or Infinity (what the search can neither rank nor
    train); OSError if unreadable."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes // 2**20} MB, so not a result or hyperspace file")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def load_trials(path, advice):
    """The hyperopt Trials pickled at path (new ones where there is no file); UserError, ending
    with advice, if unreadable."""
    if not os.path.exists(path):
        return Trials()
    try:
        with open(path, "rb") as f:
            trials = pickle.load(f)
        if not isinstance(trials, Trials):
            raise TypeError(f"it holds a {type(trials).__name__}, not hyperopt Trials")
    except Exception as e:  # noqa: BLE001 -- any unreadable pickle gets the same advice
        raise UserError(f"{path} is not a readable trials file ({type(e).__name__}: {e}); {advice}") from None
    trials.refresh()
    return trials


def save_trials(trials, path):
    atomic_write(path, lambda f: pickle.dump(trials, f), mode="wb")
