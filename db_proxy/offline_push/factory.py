"""build_offline_push: the configured providers around one OfflinePush, or None when off."""

from __future__ import annotations

from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.provider import Provider
from db_proxy.offline_push.pusher import OfflinePush
from db_proxy.storage.model import Store


def build_offline_push(
    config: OfflinePushConfig, directory_store: Store, messages_store: Store
) -> OfflinePush | None:
    """The offline push of ``config``: the webhook, FCM and APNs, each if configured.

    FCM and APNs are imported only when configured: a db_proxy with the
    webhook alone needs neither their keys nor their code paths.
    """
    if not config.enabled:
        return None
    providers: list[Provider] = []
    if config.webhook_url:
        from db_proxy.offline_push.webhook import WebhookProvider

        providers.append(WebhookProvider(config))
    if config.fcm_project_id:
        from db_proxy.offline_push.fcm import FcmProvider  # type: ignore[import-not-found,unused-ignore]

        providers.append(FcmProvider(config))
    if config.apns_topic:
        from db_proxy.offline_push.apns import ApnsProvider  # type: ignore[import-not-found,unused-ignore]

        providers.append(ApnsProvider(config))
    return OfflinePush(config, providers, directory_store, messages_store)
