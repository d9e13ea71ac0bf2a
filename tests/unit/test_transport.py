"""The shared ZeroMQ plumbing (frontend/transport/): the socket factory's options, bind/connect, and the
asyncio drain loop over real inproc and ipc socket pairs, on both event loops the processes use."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq
from async_support import until

from frontend.transport.process import batch_schedule_helper_threads, die_with_parent, watch_parent
from frontend.transport.sockets import (DEFAULT_HWM, KV_EVENTS_HWM, LINGER_MS, ROUTED_BLOCKS_HWM, bind_random_port,
                                        open_socket)
from frontend.transport.zmqloop import SocketDrainer

_names = itertools.count()


@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture(params=["inproc", "ipc"])
def endpoint(request, tmp_path):
    """A fresh endpoint of each transport (ipc in the test's own directory)."""
    if request.param == "inproc":
        return f"inproc://test-transport-{next(_names)}"
    return f"ipc://{tmp_path}/sock-{next(_names)}"


def _recv(sock: zmq.Socket, timeout_ms: int = 5000) -> list[bytes]:
    assert sock.poll(timeout_ms), "nothing arrived"
    return sock.recv_multipart()


def _term_returns(context: zmq.Context) -> bool:
    """Whether ``term()`` comes back (it waits for every open socket of the context)."""
    thread = threading.Thread(target=context.term, daemon=True)
    thread.start()
    thread.join(5)
    return not thread.is_alive()


# ---- the factory ---------------------------------------------------------------------------------------


def test_defaults_linger_zero_and_zeromq_hwms(context):
    sock = open_socket(context, zmq.DEALER)
    assert sock.getsockopt(zmq.LINGER) == LINGER_MS == 0
    assert sock.getsockopt(zmq.SNDHWM) == sock.getsockopt(zmq.RCVHWM) == DEFAULT_HWM
    sock.close()


def test_linger_and_hwms_are_applied(context):
    pub = open_socket(context, zmq.PUB, sndhwm=KV_EVENTS_HWM, linger=250)
    sub = open_socket(context, zmq.SUB, rcvhwm=ROUTED_BLOCKS_HWM, subscribe=b"")
    assert pub.getsockopt(zmq.LINGER) == 250 and pub.getsockopt(zmq.SNDHWM) == KV_EVENTS_HWM
    assert sub.getsockopt(zmq.RCVHWM) == ROUTED_BLOCKS_HWM and sub.getsockopt(zmq.SNDHWM) == DEFAULT_HWM
    pub.close()
    sub.close()


def test_bind_and_connect(context, endpoint):
    server = open_socket(context, zmq.ROUTER, bind=endpoint)
    client = open_socket(context, zmq.DEALER, connect=endpoint)
    client.send(b"ping")
    identity, payload = _recv(server)
    assert payload == b"ping"
    server.send_multipart([identity, b"pong"])
    assert _recv(client) == [b"pong"]
    client.close()
    server.close()
    assert _term_returns(context)  # LINGER 0: nothing holds the context open


def test_connect_to_several_endpoints(context, tmp_path):
    endpoints = [f"inproc://several-{next(_names)}", f"ipc://{tmp_path}/several"]
    servers = [open_socket(context, zmq.ROUTER, bind=endpoint) for endpoint in endpoints]
    client = open_socket(context, zmq.DEALER, connect=endpoints)
    time.sleep(0.1)  # both pipes are up (the ipc one connects in the background)
    client.send(b"one")
    client.send(b"two")
    assert sorted(_recv(server)[1] for server in servers) == [b"one", b"two"]  # round robin over both
    for sock in (client, *servers):
        sock.close()


def test_subscribe_filters_by_topic_prefix(context, endpoint):
    pub = open_socket(context, zmq.PUB, bind=endpoint)
    sub = open_socket(context, zmq.SUB, subscribe="kv", connect=endpoint)
    received = []
    for _ in range(500):  # until the subscription has reached the publisher
        pub.send_multipart([b"load", b"skipped"])
        pub.send_multipart([b"kv-events", b"kept"])
        if sub.poll(10):
            received.append(sub.recv_multipart())
            break
    assert received == [[b"kv-events", b"kept"]]
    pub.send_multipart([b"load", b"skipped"])
    pub.send_multipart([b"kv", b"last"])
    while (frames := _recv(sub)) != [b"kv", b"last"]:
        assert frames == [b"kv-events", b"kept"]  # sent before the subscription was seen
    pub.close()
    sub.close()


def test_subscribe_is_only_for_sub_sockets(context):
    with pytest.raises(ValueError, match="SUB"):
        open_socket(context, zmq.PUB, subscribe=b"")
    assert _term_returns(context)


def test_a_failed_bind_closes_the_socket(context):
    endpoint = f"inproc://taken-{next(_names)}"
    first = open_socket(context, zmq.PULL, bind=endpoint)
    with pytest.raises(zmq.ZMQError):
        open_socket(context, zmq.PULL, bind=endpoint)
    first.close()
    assert _term_returns(context)  # the second socket did not stay open


def test_bind_random_port_gives_the_endpoint_to_advertise(context):
    server = open_socket(context, zmq.ROUTER)
    endpoint = bind_random_port(server, "127.0.0.1")
    assert endpoint.startswith("tcp://127.0.0.1:") and int(endpoint.rsplit(":", 1)[1]) > 0
    client = open_socket(context, zmq.DEALER, connect=endpoint)
    client.send(b"hello")
    assert _recv(server)[1] == b"hello"
    client.close()
    server.close()


# ---- the drain loop ------------------------------------------------------------------------------------


class CountingDrainer(SocketDrainer):
    """Counts how often the loop (or ``after_send``) ran the drain."""

    def __init__(self, *args) -> None:
        self.drains = 0
        super().__init__(*args)

    def drain(self) -> None:
        self.drains += 1
        super().drain()


def test_one_drain_reads_every_queued_message(context, endpoint, run):
    receiver = open_socket(context, zmq.PULL, bind=endpoint)
    sender = open_socket(context, zmq.PUSH, connect=endpoint)
    for i in range(200):
        sender.send(b"%d" % i)
    time.sleep(0.2)  # all of them delivered into the receiver's pipe (ipc goes through the I/O thread)

    async def scenario() -> tuple[list[bytes], int]:
        received: list[bytes] = []
        drainer = CountingDrainer(asyncio.get_running_loop(), receiver, lambda frames: received.append(frames[0]))
        await until(lambda: len(received) == 200)
        await asyncio.sleep(0.05)
        drainer.close()
        return received, drainer.drains

    received, drains = run(scenario())
    assert received == [b"%d" % i for i in range(200)]
    assert drains == 1  # the descriptor fired once; the drain read until nothing was left
    assert receiver.closed
    sender.close()


def test_after_send_drains_input_whose_edge_was_consumed(context, endpoint, run):
    """ZeroMQ's descriptor signals a change once. A send (here: the ``zmq.EVENTS`` check a send also does)
    that processes the arrival takes the signal, and the loop never fires for the message already queued;
    ``after_send`` sees it in ``zmq.EVENTS`` and drains."""
    server = open_socket(context, zmq.ROUTER, bind=endpoint)
    client = open_socket(context, zmq.DEALER, connect=endpoint)

    async def scenario() -> list[list[bytes]]:
        received: list[list[bytes]] = []
        drainer = SocketDrainer(asyncio.get_running_loop(), client, received.append)
        client.send(b"request")
        identity, _ = _recv(server)
        server.send_multipart([identity, b"reply"])
        assert client.poll(5000)  # the reply is queued; processing it took the descriptor's signal
        await asyncio.sleep(0.1)
        assert received == []  # the loop was not told
        client.send(b"another request")
        drainer.after_send()
        await until(lambda: received)
        await asyncio.sleep(0.01)
        drainer.close()
        return received

    assert run(scenario()) == [[b"reply"]]
    server.close()


def test_replies_to_sends_made_while_draining_are_not_lost(context, endpoint, run):
    """A handler that sends (a ROUTER answering requests) needs no ``after_send``: the drain reads on until
    ``zmq.Again``, so input that arrived during the sends is read in the same drain or fires the loop again."""
    server = open_socket(context, zmq.ROUTER, bind=endpoint)
    client = open_socket(context, zmq.DEALER, connect=endpoint)

    async def scenario() -> list[bytes]:
        answers: list[bytes] = []
        loop = asyncio.get_running_loop()
        serving = SocketDrainer(loop, server, lambda frames: server.send_multipart([frames[0], b"re:" + frames[1]]))
        asking = SocketDrainer(loop, client, lambda frames: answers.append(frames[0]))
        for round_ in range(20):
            for i in range(10):
                client.send(b"%d.%d" % (round_, i))
            asking.after_send()
            await until(lambda expected=(round_ + 1) * 10: len(answers) == expected)
        serving.close()
        asking.close()
        return answers

    answers = run(scenario())
    assert answers == [b"re:%d.%d" % (r, i) for r in range(20) for i in range(10)]


def test_close_stops_watching_and_closes_the_socket(context, endpoint, run):
    receiver = open_socket(context, zmq.PULL, bind=endpoint)
    sender = open_socket(context, zmq.PUSH, connect=endpoint)

    async def scenario() -> list[bytes]:
        received: list[bytes] = []
        loop = asyncio.get_running_loop()
        drainer = SocketDrainer(loop, receiver, lambda frames: received.append(frames[0]))
        sender.send(b"before")
        await until(lambda: received)
        drainer.close()
        assert not loop.remove_reader(drainer._fd)  # no reader left on the descriptor
        return received

    assert run(scenario()) == [b"before"]
    assert receiver.closed
    sender.close()
    assert _term_returns(context)


def _ask_with_a_parent_that_is_gone() -> None:
    die_with_parent(parent=os.getppid() + 1_000_000)  # "the parent I was started by": not the one alive now
    time.sleep(5)


def _block_in_zmq_after_watching(parent: int) -> None:
    """A supervised child's shape: a handler that exits once, a main thread waiting in a blocking ZeroMQ receive,
    and no parent-death signal (as if it had been lost): only watch_parent can end the wait."""
    def exit_once(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(7)

    signal.signal(signal.SIGTERM, exit_once)
    watch_parent(parent, grace_s=30.0)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind_to_random_port("tcp://127.0.0.1")
    router.recv_multipart()


def _ignore_sigterm_after_watching(parent: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a child stuck past its handler (a finalizer that blocks)
    watch_parent(parent, grace_s=1.0)
    time.sleep(30)


@pytest.mark.parametrize("target, exitcode", [(_block_in_zmq_after_watching, 7), (_ignore_sigterm_after_watching, 1)])
def test_watch_parent_signals_the_main_thread_then_ends_the_process(target, exitcode):
    if not hasattr(os, "pidfd_open"):
        pytest.skip("pidfd_open is Linux only")
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])  # the "daemon" to outlive
    child = multiprocessing.get_context("fork").Process(target=target, args=(parent.pid,))
    child.start()
    try:
        assert parent.wait(10) == 0
        child.join(10)
        assert child.exitcode == exitcode
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_a_child_whose_parent_died_before_it_asked_exits_at_once():
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    child = multiprocessing.get_context("fork").Process(target=_ask_with_a_parent_that_is_gone)
    child.start()
    child.join(4)
    assert child.exitcode == -signal.SIGTERM


def _zeromq_threads_named(helper: threading.Thread) -> bool:
    """Whether every thread but this one and ``helper`` has named itself as ZeroMQ's."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        if int(tid) not in (threading.get_native_id(), helper.native_id):
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(comm.read().strip())
    return bool(names) and all(name.startswith("ZMQbg/") for name in names)


def _policies_after_batching(queue) -> None:
    """In a fresh process: a helper thread, a ZeroMQ context's I/O thread, then batch_schedule_helper_threads."""
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, name="helper")
    helper.start()
    context = zmq.Context()
    context.socket(zmq.DEALER).close()  # the I/O thread exists once a socket was made
    deadline = time.monotonic() + 10
    while not _zeromq_threads_named(helper) and time.monotonic() < deadline:
        time.sleep(0.01)  # a new thread names itself ZMQbg/... once it runs: until then it looks like any other
    changed = batch_schedule_helper_threads()
    policies = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as comm:
            name = comm.read().strip()
        key = "caller" if int(tid) == threading.get_native_id() else "helper" if int(tid) == helper.native_id \
            else name
        policies[key] = os.sched_getscheduler(int(tid))
    stop.set()
    helper.join()
    context.term()
    queue.put((changed, policies))


def sched_batch_allowed() -> bool:
    """Whether this machine lets a process go under SCHED_BATCH (Linux; a seccomp profile may not): asked of a
    throwaway process, so that nothing of this one changes."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))"
    return hasattr(os, "SCHED_BATCH") and subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_batch_scheduling_takes_every_thread_but_the_caller_and_zeromqs():
    if not sched_batch_allowed():
        pytest.skip("this machine does not allow SCHED_BATCH")
    ctx = multiprocessing.get_context("spawn")  # its own threads only: nothing of the test process changes
    queue = ctx.Queue()
    child = ctx.Process(target=_policies_after_batching, args=(queue,))
    child.start()
    changed, policies = queue.get(timeout=60)
    child.join(10)
    assert policies["caller"] == os.SCHED_OTHER
    assert policies["helper"] == os.SCHED_BATCH
    zeromq = {name: policy for name, policy in policies.items() if name.startswith("ZMQbg/")}
    assert zeromq and set(zeromq.values()) == {os.SCHED_OTHER}
    assert changed == sum(1 for policy in policies.values() if policy == os.SCHED_BATCH)
