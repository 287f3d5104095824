"""msfs: the HTTP picture and file store TeamTalk clients upload to (docs/msfs.md).

Wire-compatible with TeamTalk's msfs (server/src/msfs/HttpConn.cpp): a
multipart POST to any path stores the first file part and answers, with HTTP
200 and ``Content-Type: text/html`` (iOS and macOS accept no other),
``{"error_code":0,"error_msg":"成功","path":"g0/<name>","url":"http://<host>/g0/<name>"}``;
``GET /<path>`` returns the bytes. Refusals answer HTTP 200 too, with a
non-zero ``error_code``: that is the only answer TeamTalk clients read (iOS
fails any other status as a network error, Android's HttpURLConnection
throws before reading the body), and their error_msg is what they show.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.filestore import BlobStore, StoreError, check_key, open_store
from common.metrics import start_metrics_server
from common.throttle import Throttle
from msfs import content, metrics
from msfs.config import MsfsConfig
from msfs.limits import RateLimiter
from msfs.refusals import ABORTED, BUSY, MALFORMED, RATE_LIMITED, TIMEOUT, TOO_LARGE, UploadRefused
from msfs.upload import NAMESPACE, OVERHEAD, Limits, Stored, receive

log = logging.getLogger(__name__)

GROUP = "g0"  # TeamTalk's paths start with their storage group; kept so its URLs look alike
SHUTDOWN_TIMEOUT = 5.0
SWEEP_INTERVAL = 60.0
DOWNLOAD_CHUNK = 256 * 1024
LOG_INTERVAL = 5.0
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


class Msfs:
    def __init__(
        self, config: MsfsConfig, store: BlobStore, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.limits = Limits(
            config.max_upload_size, tuple(content.normalise(t) for t in config.allowed_types)
        )
        self.limiter = RateLimiter(config.uploads_per_minute)
        self.active = 0
        self._swept_at = clock()
        # A flood of refusals must not flood the log: one line per interval (the metric counts all).
        self._log_refusal = Throttle(LOG_INTERVAL)
        self._log_fault = Throttle(LOG_INTERVAL)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/{GROUP}/{{name}}", self.download)
        app.router.add_get("/{tail:.*}", self.not_found)  # not 405 for a GET of anything else
        app.router.add_post("/{tail:.*}", self.upload)  # Windows posts to /upload/, the others to /
        return app

    async def not_found(self, request: web.Request) -> web.Response:
        metrics.DOWNLOADS.labels("not_found").inc()
        raise web.HTTPNotFound()

    def health(self) -> dict[str, Any]:
        return {"ok": True, "node_id": self.config.node_id, "uploads_active": self.active}

    async def upload(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            stored = await self._upload(request)
        except UploadRefused as exc:
            metrics.REFUSALS.labels(exc.reason.name).inc()
            throttle = self._log_fault if exc.server_fault else self._log_refusal
            if throttle.ready():
                log.log(
                    logging.WARNING if exc.server_fault else logging.INFO,
                    "upload from %s refused (%s): %s%s",
                    request.remote,
                    exc.reason.name,
                    exc.message,
                    throttle.more(),
                )
            headers = {"Retry-After": "1"} if exc.reason in (BUSY, RATE_LIMITED) else {}
            return _reply(exc.reason.error_code, exc.message, "", "", headers)
        path = f"{GROUP}/{stored.name}"
        metrics.UPLOADS.inc()
        metrics.UPLOAD_BYTES.inc(stored.size)
        metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
        log.debug("stored %s (%s, %d bytes) from %s", path, stored.kind, stored.size, request.remote)
        return _reply(0, "成功", path, self._base_url(request) + path)

    async def _upload(self, request: web.Request) -> Stored:
        now = self.clock()
        if now - self._swept_at > SWEEP_INTERVAL:
            self.limiter.sweep(now)
            self._swept_at = now
        if self.active >= self.config.max_concurrent_uploads:
            raise UploadRefused(BUSY, "too many uploads at once; retry in a moment")
        address = request.remote or "?"
        if not self.limiter.allow(address, now):
            wait = self.limiter.retry_after(address, now)
            raise UploadRefused(RATE_LIMITED, f"too many uploads from {address}; retry in {wait:.0f} s")
        declared = request.content_length
        if declared is not None and declared > self.limits.max_size + OVERHEAD:
            raise UploadRefused(TOO_LARGE, f"the file is larger than {self.limits.max_size} bytes")
        if request.content_type != "multipart/form-data":
            raise UploadRefused(MALFORMED, "expected a multipart/form-data body")
        self.active += 1  # before any await: the check above stays true for this upload
        metrics.ACTIVE.inc()
        try:
            async with asyncio.timeout(self.config.upload_timeout):
                try:
                    reader = await request.multipart()
                except (ValueError, AssertionError, KeyError) as exc:
                    raise UploadRefused(MALFORMED, f"malformed multipart body: {exc}") from exc
                return await receive(reader, self.store, self.limits)
        except TimeoutError as exc:
            raise UploadRefused(TIMEOUT, f"the upload took over {self.config.upload_timeout:g} s") from exc
        except (ConnectionError, EOFError, asyncio.IncompleteReadError) as exc:
            # The client went away: nobody to answer, but counted like a refusal.
            raise UploadRefused(ABORTED, f"the client went away mid-upload: {exc!r}") from exc
        finally:
            self.active -= 1
            metrics.ACTIVE.dec()

    def _base_url(self, request: web.Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/") + "/"
        host = request.headers.get("Host", "")
        if not _HOST.fullmatch(host):  # never echo a hostile Host into a URL
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            host = f"{sock[0]}:{sock[1]}" if sock else "127.0.0.1"
        return f"http://{host}/"

    async def download(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            key = check_key(f"{NAMESPACE}/{name}")
        except StoreError:  # nothing a client sends becomes a path unchecked
            metrics.DOWNLOADS.labels("not_found").inc()
            raise web.HTTPNotFound() from None
        try:
            reader = await self.store.open(key)
        except StoreError as exc:
            metrics.DOWNLOADS.labels("error").inc()
            log.warning("download of %s failed: %s", name, exc.message)
            raise web.HTTPInternalServerError() from exc
        if reader is None:
            metrics.DOWNLOADS.labels("not_found").inc()
            raise web.HTTPNotFound()
        try:
            kind = content.served_type(name)
            response = web.StreamResponse(
                headers={
                    "Content-Type": kind,
                    "Content-Length": str(reader.size),
                    # Names are random and never reused: a stored file never changes.
                    "Cache-Control": "public, max-age=31536000, immutable",
                    "X-Content-Type-Options": "nosniff",
                }
            )
            if kind == content.OCTET_STREAM:
                response.headers["Content-Disposition"] = "attachment"
            await response.prepare(request)
            offset = 0
            while request.method != "HEAD" and offset < reader.size:
                chunk = await reader.read(offset, DOWNLOAD_CHUNK)
                if not chunk:
                    break
                await response.write(chunk)
                offset += len(chunk)
            await response.write_eof()
        finally:
            await reader.close()
        metrics.DOWNLOADS.labels("ok").inc()
        return response


def _reply(
    code: int, message: str, path: str, url: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps(
        {"error_code": code, "error_msg": message, "path": path, "url": url}, ensure_ascii=False
    )
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)


async def serve(config: MsfsConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]) -> None:
    store = open_store(config.store)
    server = Msfs(config, store)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    exposed = None
    try:
        # Bind the socket ourselves: with port 0 we need to know which port it got.
        sock = socket.create_server((config.host, config.port), reuse_port=False)
        port = int(sock.getsockname()[1])
        await web.SockSite(runner, sock).start()
        exposed = await start_metrics_server(config.metrics_host, config.metrics_port, server.health)
        log.info("msfs %s on http://%s:%d/ (store %s)", config.node_id, config.host, port, config.store)
        announce({"port": port, "metrics_port": exposed[1] if exposed else None})
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        if exposed is not None:
            await exposed[0].cleanup()
        await store.close()
