# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A worker's outputs to their request streams, built as ``frontend.gateway.delivery`` (``EngineClient`` calls it
for each ``OutputBatch``).

Per streamed token, this loop is the gateway's: in native code, an output whose stream has a plain writer
(``RequestStream.plain``, a ``PlainTokens``) and a reader waiting with nothing queued goes to
``PlainTokens.take`` without a Python frame; any other output, or one ``take`` leaves, goes to
``RequestStream.push``.
"""

from frontend.postprocess.plain_tokens cimport PlainTokens


def deliver(list outputs, dict streams):
    """Hand each of ``outputs`` (``RequestOutput``) to the stream of its request in ``streams``; outputs of
    requests no longer there (released, aborted) are dropped."""
    cdef object stream, plain
    for output in outputs:
        stream = streams.get(output.request_id)
        if stream is None:
            continue
        plain = stream.plain
        if plain is not None and stream._waiter is not None and not stream._items and (
                (<PlainTokens>plain).take(output) if type(plain) is PlainTokens else plain.take(output)):
            continue
        stream.push(output)
