"""Who may call the server: anyone on loopback, a key holder anywhere else.

A server bound to a loopback address is reachable only from this machine, so a key is
optional there (given, it is enforced). Bound anywhere else — ``0.0.0.0``, a LAN address, a
name that resolves to one — the server refuses to start without a key: an open endpoint would
let anyone on the network spend the cluster's devices. The key travels as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and is compared in constant time
(:func:`hmac.compare_digest`), so response timing does not leak how much of a guess matched.

The dashboard's live stream is the one exception to headers: a browser's ``EventSource`` cannot
set them, so ``/v1/live`` and ``/v1/live.json`` also take ``?key=KEY`` (the app passes the
query only for those routes; a key in a URL can end up in browser history, so nothing that
spends the devices accepts it).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Mapping

from ..errors import InputError

# Shortest key accepted: 128 bits as hex (``python -c 'import secrets;
# print(secrets.token_hex(16))'``) — a short key is guessable by an attacker with time.
MIN_KEY_CHARS = 16
ENV_KEY = "COINFER_API_KEY"


def is_loopback(host: str) -> bool:
    """``host`` (an address or a name) reaches only this machine: every address it resolves
    to is a loopback one. A name that does not resolve is not loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def resolve_key(host: str, flag: str | None, env: Mapping[str, str]) -> str | None:
    """The API key to enforce: ``--api-key``, else ``$COINFER_API_KEY``; ``None`` (no key) is
    allowed only on a loopback host. Raises :class:`InputError` (one line) otherwise, or for a
    key shorter than :data:`MIN_KEY_CHARS`."""
    key = flag if flag is not None else env.get(ENV_KEY) or None
    where = "--api-key" if flag is not None else f"${ENV_KEY}"
    if key is None:
        if not is_loopback(host):
            raise InputError(
                f"--host {host} is not a loopback address: give an API key (--api-key or "
                f"${ENV_KEY}) or bind to 127.0.0.1"
            )
        return None
    if len(key) < MIN_KEY_CHARS or not key.isprintable() or key.strip() != key:
        raise InputError(
            f"{where}: the API key must be at least {MIN_KEY_CHARS} printable characters "
            "without surrounding spaces"
        )
    return key


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


def authorised(
    headers: Mapping[str, str], key: str | None, query: Mapping[str, str] | None = None
) -> bool:
    """``True`` when no key is set, or the request presents it (constant-time compare): in a
    header, or — only when the caller passes ``query`` (the live stream) — as ``?key=``."""
    if key is None:
        return True
    given = presented_key(headers)
    if given is None and query is not None:
        given = query.get("key") or None
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), key.encode())


__all__ = ["ENV_KEY", "MIN_KEY_CHARS", "authorised", "is_loopback", "presented_key", "resolve_key"]
