"""coinfer.serve: an HTTP endpoint over a live runtime session (``coinfer serve``).

A client of :class:`coinfer.runtime.session.Session`; modules, one job each:

- :mod:`.codecs` — request/response bodies (JSON nested lists, safetensors; never pickle) <->
  tensors, checked against the model's per-sample input contract;
- :mod:`.batcher` — groups requests into the session's fixed micro-batches (padding a partial
  one after a short wait), bounds the queue (429 with a retry hint);
- :mod:`.metrics` — the Prometheus registry of one server;
- :mod:`.auth` — loopback or an API key, compared in constant time;
- :mod:`.service` — session + batcher + metrics + a watch on plan changes, and their shutdown;
- :mod:`.app` — the FastAPI routes; :mod:`.server` — uvicorn, bound early, stopped cleanly.

Nothing heavy is imported here: ``coinfer --help`` must not pay for FastAPI or torch.
"""

from __future__ import annotations
