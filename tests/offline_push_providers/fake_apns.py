"""An APNs stand-in for :mod:`h2_server`: checks what Apple checks (the provider token's ES256
signature, key id, team and age; the topic; the path), records every request, and answers as a
test scripts it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.offline_push_providers.h2_server import Request, Response

DEVICE_PATH = "/3/device/"


def refusal(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps({"reason": reason}).encode())


@dataclass
class FakeApns:
    public_key: ec.EllipticCurvePublicKey
    key_id: str
    team_id: str
    topic: str
    requests: list[Request] = field(default_factory=list)
    #: Provider tokens answered 403 ExpiredProviderToken (as if older than an hour).
    expired: set[str] = field(default_factory=set)
    #: Every provider token is "expired" (the sender's clock is off).
    expire_all: bool = False
    #: Per device token, answers to give (in order) instead of a 200.
    script: dict[str, list[Response]] = field(default_factory=dict)

    def provider_token(self, request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("bearer ")

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.method != "POST" or not request.path.startswith(DEVICE_PATH):
            return refusal(404, "BadPath")
        token = self.provider_token(request)
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"])
        except jwt.PyJWTError:
            return refusal(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return refusal(403, "InvalidProviderToken")
        if self.expire_all or token in self.expired or time.time() - claims.get("iat", 0) > 3600:
            return refusal(403, "ExpiredProviderToken")
        if request.headers.get("apns-topic") != self.topic:
            return refusal(400, "DeviceTokenNotForTopic")
        answers = self.script.get(request.path.removeprefix(DEVICE_PATH))
        if answers:
            return answers.pop(0)
        return Response(200, {"apns-id": f"id-{len(self.requests)}"})
