"""What `leukedge serve` accepts from whom: a local service's Host and Origin rules, and one error
body shape.

The server has no authentication, so it must not be usable from a web page that happens to be
open on the lab PC:

- **Host**: a request whose ``Host`` header is not a name of this server (the loopback names
  ``localhost``, ``127.0.0.1``, ``[::1]``, the bound address, names added with ``--allow-host``;
  for a wildcard bind also this machine's host names and addresses), or names another port,
  gets 400. That stops DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 still sends ``Host: evil.example:8000``. A request without ``Host`` (HTTP/1.0
  scripts) is accepted; browsers always send one.
- **Origin**: a state-changing request (any method but GET, HEAD, OPTIONS) that carries an
  ``Origin`` other than this server's own (``http://<allowed name>:<port>``; ``null`` included),
  or a ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``, gets 403: a browser page
  cannot post images or review decisions. Lab software (curl, a LIMS, Python) sends no
  ``Origin`` and is not affected. No CORS headers are ever sent.
- **Pages** (the review page): :func:`page_headers` sends a Content-Security-Policy that runs
  only the page's own inline script and style (by hash), loads nothing from elsewhere, and
  forbids framing (no click-jacking of decisions); :data:`PRIVATE_HEADERS` keep the review
  data and images out of caches and out of other sites' pages.

Every error the server answers is ``{"error": "message"}`` (JSON); an image that could not be
classified also carries ``path`` and ``needs_review``, like a row of ``leukedge infer``.
A client that disconnects mid-request is dropped without a log entry.

How much at once: :class:`PixelBudget` admits an upload's decode only while the pixels held by
the requests in flight stay within a budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit


log = logging.getLogger("leukedge.runtime.http_api")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARDS = ("", "0.0.0.0", "::")
ROUTES = ("GET /healthz, GET /v1/model, POST /v1/classify, GET /v2, GET /v2/health/ready, "
          "GET /v2/models/{name}, POST /v2/models/{name}/infer")
FETCH_SITES_ACCEPTED = ("same-origin", "none")
LOCAL_ONLY = ("leukedge serve accepts requests from local software and its own pages, not from "
              "other web pages")
PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Cross-Origin-Resource-Policy": "same-origin", "Referrer-Policy": "no-referrer"}


def _inline_hashes(html: str, tag: str) -> list[str]:
    import base64
    import hashlib
    import re

    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in bodies]


def page_headers(html: str) -> dict[str, str]:
    """The headers of a self-contained HTML page: :data:`PRIVATE_HEADERS` and a policy that
    runs only its own inline ``<script>`` and ``<style>`` (attribute-free tags, by hash),
    fetches and shows images from this server only, and is never framed."""
    scripts = " ".join(_inline_hashes(html, "script")) or "'none'"
    styles = " ".join(_inline_hashes(html, "style")) or "'none'"
    policy = ("default-src 'none'; img-src 'self'; connect-src 'self'; "
              f"script-src {scripts}; style-src {styles}; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return {**PRIVATE_HEADERS, "Content-Security-Policy": policy, "X-Frame-Options": "DENY"}


async def send_error(send, status: int, message: str, headers: Iterable = ()) -> None:
    """Answer ``{"error": message}`` with ``status`` on a raw ASGI ``send``."""
    data = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


def _bare(name: str) -> str:
    return name.strip().lower().strip("[]").rstrip(".")


def expected_host_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a client may put in ``Host`` for a server bound to ``host``."""
    names = {*LOOPBACK_NAMES, _bare(host), *(_bare(n) for n in extra)}
    if _bare(host) in WILDCARDS:  # reachable under this machine's names and addresses
        try:
            names |= {_bare(socket.gethostname()), _bare(socket.getfqdn())}
            for info in socket.getaddrinfo(socket.gethostname(), None):
                names.add(_bare(str(info[4][0])))
        except OSError:
            pass
    return frozenset(n for n in names if n)


def split_host(value: str) -> Optional[tuple[str, Optional[int]]]:
    """``("name", port or None)`` of a Host header, or None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:
        return None
    else:
        name, port_text = value, None
    if port_text is None:
        return _bare(name), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return _bare(name), int(port_text)


class TrackedSend:
    """An ASGI ``send`` that remembers whether the response has started (after which an error
    can no longer be answered with a status of its own)."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class LocalOnly:
    """ASGI middleware: the Host and Origin rules above; also the last net for errors, so a
    client that disconnects or misbehaves never puts a traceback in the log.

    Args:
        app: the ASGI app to guard.
        names: the accepted host names (:func:`expected_host_names`).
        port: the port the server listens on (None: any, for an app mounted elsewhere).
    """

    def __init__(self, app: Any, names: Iterable[str], port: Optional[int] = None):
        self.app, self.names, self.port = app, frozenset(names), port

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await send_error(send, *refusal)
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            if _disconnected(e) or tracked.started:  # gone, or answered (and logged) by the app
                return
            log.error("internal error answering %s %s: %s: %s", scope.get("method"),
                      scope.get("path"), type(e).__name__, e)
            await send_error(send, 500, f"internal error ({type(e).__name__})")

    def refusal(self, scope) -> Optional[tuple[int, str]]:
        """(status, message) when the request breaks a rule, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        host = headers.get("host")
        if host is not None and not self._ours(split_host(host)):
            return 400, (f"unexpected Host header {host!r}: this server answers to "
                         f"{self._listing()} (leukedge serve --allow-host adds a name)")
        if scope.get("method", "GET").upper() in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self._ours(_origin_host(origin)):
            return 403, f"cross-origin request refused (Origin {origin!r}): {LOCAL_ONLY}"
        fetch_site = headers.get("sec-fetch-site", "").lower()
        if fetch_site and fetch_site not in FETCH_SITES_ACCEPTED:
            return 403, (f"cross-origin request refused (Sec-Fetch-Site: {fetch_site}): "
                         f"{LOCAL_ONLY}")
        return None

    def _ours(self, parsed: Optional[tuple[str, Optional[int]]]) -> bool:
        if parsed is None:
            return False
        name, port = parsed  # a Host without a port: the name is what DNS rebinding fakes
        return name in self.names and (self.port is None or port is None or port == self.port)

    def _listing(self) -> str:
        port = f":{self.port}" if self.port else ""
        shown = sorted(f"[{n}]{port}" if ":" in n else f"{n}{port}" for n in self.names)
        return ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")


def _origin_host(origin: str) -> Optional[tuple[str, Optional[int]]]:
    try:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        return _bare(parts.hostname), parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


def _disconnected(error: BaseException) -> bool:
    """A client that went away: Starlette's ClientDisconnect, a reset or broken connection."""
    return type(error).__name__ == "ClientDisconnect" or isinstance(
        error, (ConnectionError, BrokenPipeError))


class PixelBudget:
    """Admits an image's decode while the pixels held by the requests in flight (decoded, queued
    or in the model) stay within ``budget``; an image larger than the budget runs alone.

    So a burst of uploads declaring 49 MP each is decoded one after the other instead of all at
    once (each is ~150 MB decoded and several times that inside the model), whatever the count.
    """

    def __init__(self, budget: int):
        self.budget, self.held = budget, 0
        self._changed: Optional[asyncio.Condition] = None

    async def acquire(self, pixels: int) -> None:
        self._changed = self._changed or asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0
                                         or self.held + pixels <= self.budget)
            self.held += pixels

    async def release(self, pixels: int) -> None:
        async with self._changed:
            self.held -= pixels
            self._changed.notify_all()


def http_error_message(request, exc) -> str:
    """Starlette's HTTPException (404, 405, a malformed form) as this API's message."""
    method, path = request.method, request.url.path
    routes = ", ".join([ROUTES, *getattr(request.app.state, "more_routes", ())])
    if exc.status_code == 404:
        return f"no such route: {method} {path} (routes: {routes})"
    if exc.status_code == 405:
        return f"{method} is not allowed on {path} (routes: {routes})"
    if exc.status_code == 400:
        return f"malformed request body: {exc.detail}"
    return str(exc.detail)
