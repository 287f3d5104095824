"""Configuration of the offline push (the ``[offline_push]`` table)."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import ConfigError, setting


@dataclass(frozen=True, slots=True)
class OfflinePushConfig:
    webhook_url: str = setting(
        "",
        "Generic path: every notification is POSTed here as JSON, signed (X-Imcluster-Signature: "
        "sha256=HMAC(webhook_secret, timestamp.body)); empty: off. See docs/offline-push.md.",
    )
    webhook_secret: str = setting(
        "", "Key of the webhook's HMAC signature (required with webhook_url).", secret=True
    )
    fcm_project_id: str = setting("", "Firebase project of FCM HTTP v1 (Android tokens); empty: off.")
    fcm_credentials: str = setting(
        "", "Path of the FCM service-account JSON (its private key signs the OAuth2 token request)."
    )
    fcm_endpoint: str = setting("https://fcm.googleapis.com", "FCM HTTP v1 base URL.")
    apns_topic: str = setting("", "APNs topic (the iOS app's bundle id) for iOS tokens; empty: off.")
    apns_key_file: str = setting("", "Path of the APNs auth key (.p8, ES256).")
    apns_key_id: str = setting("", "Key id of the APNs auth key.")
    apns_team_id: str = setting("", "Apple developer team id (the token's issuer).")
    apns_endpoint: str = setting(
        "https://api.push.apple.com", "APNs HTTP/2 base URL (https://api.sandbox.push.apple.com to test)."
    )
    ca_file: str = setting(
        "", "PEM of the CAs that providers' TLS servers are checked against; empty: the system's."
    )
    include_text: bool = setting(
        False,
        "Put the message text in notifications. Off by default: a push service (and the webhook's "
        "receiver) sees only who wrote, never what.",
    )
    queue_size: int = setting(
        10_000, "Notifications waiting (or retrying) at most; past that they are dead letters."
    )
    queue_bytes: int = setting(
        16 * 1024 * 1024, "Bytes the waiting notifications may take at most (texts included)."
    )
    concurrency: int = setting(16, "Requests in flight to each provider at once.")
    timeout: float = setting(5.0, "Seconds one request to a provider may take.")
    retry_initial: float = setting(0.5, "First retry delay, in seconds; doubled each time (with jitter).")
    retry_max: float = setting(30.0, "Longest delay between two tries, in seconds.")
    retry_for: float = setting(
        600.0,
        "Seconds a notification is retried before it is a dead letter (so a receiver down for a few "
        "minutes loses nothing).",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.fcm_project_id or self.apns_topic)

    def __post_init__(self) -> None:
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError("offline_push.webhook_secret is required with offline_push.webhook_url")
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("offline_push.webhook_url must be an http:// or https:// URL")
        if self.fcm_project_id and not self.fcm_credentials:
            raise ConfigError("offline_push.fcm_credentials is required with offline_push.fcm_project_id")
        if self.apns_topic and not (self.apns_key_file and self.apns_key_id and self.apns_team_id):
            raise ConfigError(
                "offline_push.apns_key_file, apns_key_id and apns_team_id are required with apns_topic"
            )
        if self.queue_size < 1 or self.queue_bytes < 1 or self.concurrency < 1:
            raise ConfigError("offline_push.queue_size, queue_bytes and concurrency must be at least 1")
        if not 0 < self.timeout <= 60:
            raise ConfigError("offline_push.timeout must be above 0 and at most 60 seconds")
        if not 0 < self.retry_initial <= self.retry_max <= self.retry_for:
            raise ConfigError("offline_push: expected 0 < retry_initial <= retry_max <= retry_for")
