"""Quiet output for keras_rbp's entry points (the `keras-rbp` command and
the examples), which set TF_CPP_MIN_LOG_LEVEL before TensorFlow is
imported. This module imports nothing heavy: it must run before TensorFlow.

TensorFlow and LiteRT print some lines whatever that level says: the lines
its shared libraries log before absl's logging is set up ("All log messages
before absl::InitializeLog() ...", oneDNN, CUDA), LiteRT's "Created
TensorFlow Lite XNNPACK delegate", and the int8 converter's
"fully_quantize: ..." line. Where TF_CPP_MIN_LOG_LEVEL asks for no INFO
lines (1 or more), `quiet_stderr` sends the process's stderr to /dev/null
around the calls that print them. Left unset (a library user's process),
nothing changes.
"""

import contextlib
import os
import sys

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# The level the entry points set: INFO, WARNING and ERROR lines of
# TensorFlow's C++ code are left out (its errors reach Python as exceptions).
ENTRY_POINT_LEVEL = "3"
COMMAND_NAMES = ("keras-rbp",)


def set_entry_point_level():
    """Sets TF_CPP_MIN_LOG_LEVEL for an entry point, unless the user set it."""
    os.environ.setdefault(LEVEL, ENTRY_POINT_LEVEL)


def running_as_command():
    """Whether this process is the keras-rbp command: the console script, or
    `python -m keras_rbp` while Python imports the package (sys.argv[0] is
    then "-m"; see the documentation of `python -m`)."""
    program = sys.argv[0] if sys.argv else ""
    if os.path.basename(program) in COMMAND_NAMES:
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return program == "-m" and any(
        flag == "-m" and module in ("keras_rbp", "keras_rbp.__main__")
        for flag, module in zip(orig, orig[1:])
    )


def quiet():
    """Whether TF_CPP_MIN_LOG_LEVEL asks for no INFO lines."""
    try:
        return int(os.environ.get(LEVEL, "0")) >= 1
    except ValueError:
        return False


@contextlib.contextmanager
def quiet_stderr():
    """Sends file descriptor 2 to /dev/null inside the block when `quiet()`;
    Python's own sys.stderr is flushed first and works again after."""
    if not quiet():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
