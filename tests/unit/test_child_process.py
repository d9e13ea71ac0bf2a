"""The daemon's child process entry (``frontend/daemon/supervisor.py`` ``_child_main``): the process ends with its
target, whatever the interpreter's finalizers would do after it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import zmq

from frontend.daemon.supervisor import _child_main

EXIT_S = 15.0


def _blocked_context_then_exit(code) -> None:
    """Leaves what a SIGTERM in the middle of making a socket can leave: a context whose finalizer waits forever
    (a socket that never got LINGER 0, with a message no peer will take)."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, -1)
    sock.connect("tcp://127.0.0.1:9")
    sock.send(b"never taken", zmq.NOBLOCK)
    raise SystemExit(code)


def _fails() -> None:
    raise RuntimeError("the target failed")


def _run(target, *args) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(
        target=_child_main, args=("dyn-test", "warning", "text", target, args, os.getpid()))
    process.start()
    process.join(EXIT_S)
    if process.is_alive():
        process.kill()
        process.join()
        raise AssertionError("the child outlived its target")
    return process


def test_a_blocking_finalizer_does_not_keep_the_child_alive():
    assert _run(_blocked_context_then_exit, 0).exitcode == 0


def test_the_exit_code_is_the_targets():
    assert _run(_blocked_context_then_exit, 3).exitcode == 3
    assert _run(_fails).exitcode == 1


def test_sigterm_ends_the_child_with_0():
    process = multiprocessing.get_context("spawn").Process(
        target=_child_main, args=("dyn-test", "warning", "text", time.sleep, (60,), os.getpid()))
    process.start()
    time.sleep(1.0)  # past the imports and the signal handler
    os.kill(process.pid, signal.SIGTERM)
    process.join(EXIT_S)
    assert not process.is_alive() and process.exitcode == 0
