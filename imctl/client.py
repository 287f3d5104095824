"""A small blocking client of the admin HTTP API, and the exit codes it leads to.

Blocking urllib rather than aiohttp: a CLI makes one request at a time, and
this way no command needs an event loop.
"""

from __future__ import annotations

import getpass
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from common.config import redact_urls

# Exit codes scripts can trust (documented in ``imctl --help``).
EXIT_OK = 0
EXIT_ERROR = 1  # the server refused: not found, conflict, bad request, ...
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_UNREACHABLE = 3  # the login_server, or a server behind it, cannot be reached
EXIT_UNAUTHORIZED = 4  # no token, or a wrong one

API_PATH = "/admin/v1"
OPERATOR_HEADER = "X-Imcluster-Operator"  # who the audit trail names (login_server/admin/audit.py)
TIMEOUT = 30.0


def operator() -> str:
    """``user@host`` of whoever runs imctl, for the audit trail (as claimed: the token is the credential)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor in the password database
        user = "unknown"
    # ASCII: a header is latin-1 on the wire (the server keeps [A-Za-z0-9_.@+-] of it anyway).
    return f"{user}@{socket.gethostname()}".encode("ascii", "replace").decode()


class CliError(click.ClickException):
    """One line on stderr and, by its class, an exit code; never a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(redact_urls(message))  # a database URL in a message keeps its password
        self.status = status  # the HTTP status, 0 if there was no answer


class BadUsage(CliError):
    """A bad option value, config or input file (click's own usage errors exit 2 too)."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """Nothing answered at the URL, or a server behind the login_server is down."""

    exit_code = EXIT_UNREACHABLE


class Unauthorized(CliError):
    exit_code = EXIT_UNAUTHORIZED


def _error_text(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"]
    return None


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """``method`` on ``/admin/v1<path>``; the JSON answer, or CliError."""
        data = None if body is None else json.dumps(body).encode()
        with self._open(method, path, query, data, "application/json", timeout) as response:
            try:
                raw = response.read()
            except (OSError, TimeoutError) as exc:  # a reset or a read timeout after the headers
                raise Unreachable(f"cannot reach the cluster at {self.url}: {exc or 'timed out'}") from None
        try:
            value = json.loads(raw)
        except ValueError:
            raise Unreachable(f"{self.url} did not answer like an imcluster admin API") from None
        if not isinstance(value, dict):
            raise Unreachable(f"{self.url} did not answer like an imcluster admin API")
        return value

    def stream(
        self, path: str, query: dict[str, Any], timeout: float | None = None
    ) -> http.client.HTTPResponse:
        """``GET /admin/v1<path>`` answered in JSON lines: the open response, to be read
        line by line and closed by the caller (``timeout`` is per read)."""
        return self._open("GET", path, query, None, "application/x-ndjson", timeout)

    def _open(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        data: bytes | None,
        accept: str,
        timeout: float | None,
    ) -> http.client.HTTPResponse:
        url = f"{self.url}{API_PATH}{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": accept, OPERATOR_HEADER: operator()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(
                request, timeout=timeout or self.timeout
            )
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise Unreachable(f"cannot reach the cluster at {self.url}: {exc.reason}") from None
        except (OSError, TimeoutError) as exc:  # a reset or a read timeout after connecting
            raise Unreachable(f"cannot reach the cluster at {self.url}: {exc or 'timed out'}") from None
        return response

    def _refused(self, status: int, body: bytes) -> CliError:
        text = _error_text(body)
        if status == 401:
            hint = (
                "the admin token was refused"
                if self.token
                else "no admin token: use --token, $IMCLUSTER_TOKEN or [imctl] token in the config"
            )
            return Unauthorized(f"unauthorized: {hint}", status)
        if text is None:
            if status == 404:
                # aiohttp's plain 404: the routes do not exist, the API is off.
                return Unreachable(f"no admin API at {self.url} (is login_server.admin_token set?)", status)
            return Unreachable(f"{self.url} answered HTTP {status}", status)
        if status == 503:
            return Unreachable(f"cluster unavailable: {text}", status)
        return CliError(text, status)
