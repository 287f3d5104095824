"""A Google stand-in for FcmProvider, on aiohttp over TLS: the OAuth2 token endpoint (checks the
service account's signed assertion as Google does: RS256 signature by the account's key, issuer,
audience, scope, grant type) and FCM's messages:send (checks the access token, records the
message, answers as a test scripts it)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from db_proxy.offline_push.fcm import GRANT_TYPE, SCOPE

EMAIL = "push@example-project.iam.gserviceaccount.com"
PROJECT = "example-project"


@dataclass(frozen=True)
class Sent:
    access_token: str
    message: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def google_error(status: int, code: str, message: str, *details: dict[str, Any]) -> Answer:
    """An error as Google APIs write it (google.rpc.Status, with FCM's details)."""
    return Answer(status, {"error": {"code": status, "status": code, "message": message, "details": details}})


def fcm_code(code: str) -> dict[str, Any]:
    """The detail naming FCM's own error code (UNREGISTERED, INVALID_ARGUMENT...)."""
    return {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}


@dataclass
class FakeFcm:
    public_key: rsa.RSAPublicKey
    url: str = ""  # https://127.0.0.1:PORT, once serving
    expires_in: int = 3600
    #: Access tokens given out, in order; those still valid.
    issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)
    #: Per device token, answers to give (in order) instead of a 200.
    script: dict[str, list[Answer]] = field(default_factory=dict)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != GRANT_TYPE:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=EMAIL,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        if claims.get("scope") != SCOPE:
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = f"access-{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    async def send(self, request: web.Request) -> web.Response:
        access_token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if access_token not in self.valid:
            return _answer(google_error(401, "UNAUTHENTICATED", "Request had invalid authentication"))
        if request.match_info["project"] != PROJECT:
            return _answer(google_error(403, "PERMISSION_DENIED", "wrong project"))
        message = (await request.json())["message"]
        self.sent.append(Sent(access_token, message))
        answers = self.script.get(message["token"])
        if answers:
            return _answer(answers.pop(0))
        return web.json_response({"name": f"projects/{PROJECT}/messages/{len(self.sent)}"})


def _answer(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        text=json.dumps(answer.body),
        content_type="application/json",
        headers=answer.headers,
    )


@contextlib.asynccontextmanager
async def serve(fake: FakeFcm, context: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[FakeFcm]:
    app = web.Application()
    app.router.add_post("/token", fake.token)
    app.router.add_post("/v1/projects/{project}/messages:send", fake.send)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind((host, 0))  # a free port, known before the site starts
    fake.url = f"https://{host}:{sock.getsockname()[1]}"
    try:
        await web.SockSite(runner, sock, ssl_context=context).start()
        yield fake
    finally:
        await runner.cleanup()
        sock.close()
