"""One request through an ASGI app in process (no server, no socket): the tests of
`leukedge serve`'s API and of the review station share it."""

from __future__ import annotations


async def asgi_request(app, method: str, path: str, headers: dict, body: bytes = b"",
                       query: str = "", chunks: int = 1, port: int = 8000
                       ) -> tuple[int, bytes, dict]:
    """(status, body bytes, headers) of one request; ``body`` arrives in ``chunks`` parts."""
    size = max(1, -(-len(body) // chunks))
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]
    sent: list = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "server": ("127.0.0.1", port),
             "client": ("127.0.0.1", 50000),
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                         for k, v in headers.items()]}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], data, {k.decode(): v.decode() for k, v in start["headers"]}
