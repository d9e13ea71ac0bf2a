"""A tokenizer-pool process: renders chat templates and tokenizes prompts for the gateway processes.

Sockets (messages in ``frontend.protocol.tokenizer``):
    recv_from_gateways  ROUTER  bind  ipc (one endpoint per pool process)  TokenizeRequest -> TokenizeResult

The work itself is ``tokenization.Tokenization``; a template or decoding problem is answered with an error
message for a 400, it never stops the loop.
"""

from __future__ import annotations

import logging
from multiprocessing.connection import Connection

import msgspec
import zmq

from ..protocol import tokenizer as wire
from ..transport.process import tune_garbage_collector
from ..transport.sockets import open_socket
from .tokenization import Tokenization

log = logging.getLogger(__name__)


def run(index: int, endpoint: str, fast_bpe: bool, ready: Connection) -> None:
    """Process entry: serve tokenization requests until terminated (``fast_bpe``: ``--fast-bpe``)."""
    context = zmq.Context()
    recv_from_gateways = open_socket(context, zmq.ROUTER, bind=endpoint)
    tokenization = Tokenization(release_gil=True, fast_bpe=fast_bpe)
    tune_garbage_collector()
    ready.send("ready")
    ready.close()
    encode = wire.encoder.encode
    while True:
        frames = recv_from_gateways.recv_multipart()
        if len(frames) != 2:
            continue
        identity, payload = frames
        try:
            request = wire.request_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            log.warning("malformed tokenizer frame", extra={"error": str(exc)})
            continue
        recv_from_gateways.send_multipart([identity, encode(tokenization.handle(request))])
