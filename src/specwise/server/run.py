"""``specwise serve``: uvicorn in the main thread, the model loading beside it.

The port answers at once (503 until the model, drafters and cost profile are
loaded; /health turns 200 then). SIGTERM stops admitting (503), lets the
running requests finish within ``shutdown_timeout`` and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import uvicorn

from specwise.errors import SpecwiseError
from specwise.server.app import ServeConfig, Server, create_app

log = logging.getLogger("specwise")

# OpenMP's wait policy is left at libgomp's default on purpose: it spins briefly
# after a parallel region, then sleeps, so the kernels' threads spin through a
# step's few-microsecond gaps and sleep between steps, when the HTTP side runs.
# Measured through the server (BENCHMARKS.md): OMP_WAIT_POLICY=PASSIVE, which
# sleeps at every gap, cost 27% of batch-1 throughput; ACTIVE matched the default.


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self.specwise = server

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.specwise.draining = True  # new requests get 503 while the running ones finish
        super().handle_exit(sig, frame)


def serve(config: ServeConfig, host: str, port: int, shutdown_timeout: float = 30.0) -> int:
    """Serve until stopped; 0 after a clean stop, 2 if the model could not be loaded."""
    logging.basicConfig(level=logging.INFO, format="specwise: %(message)s")
    server = Server(config)
    uv = _Uvicorn(
        uvicorn.Config(create_app(server), host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=shutdown_timeout),
        server,
    )

    def load() -> None:
        try:
            server.load()
        except SpecwiseError as exc:
            server.load_error = str(exc)
        except Exception as exc:  # a bug, not a user mistake: keep its traceback
            log.error("loading failed", exc_info=exc)
            server.load_error = f"{type(exc).__name__}: {exc}"
        if server.load_error is not None:
            uv.should_exit = True
            return
        llm = server.llm
        assert llm is not None
        drafters = ", ".join(config.drafters)
        print(f"specwise: ready: {server.model_name} (drafters {drafters}, policy {config.policy}, K {config.num_speculative_tokens}, "
              f"{config.max_num_seqs} slots of {llm.max_model_len} tokens)", flush=True)  # fmt: skip

    print(f"specwise: listening on http://{host}:{port} (loading the model; /health answers 200 when ready)", flush=True)
    threading.Thread(target=load, name="specwise-load", daemon=True).start()
    # uvicorn re-raises a caught SIGTERM after its graceful stop; a no-op handler makes that a clean exit.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uv.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.llm is not None:
            server.llm.loop.close(timeout=5.0)
    if server.load_error is not None:
        print(f"specwise: error: {server.load_error}", file=sys.stderr)
        return 2
    if not uv.started:
        return 1  # uvicorn has said why (the port is taken, say)
    return 0
