"""Offline push: a notification to the devices of recipients with no online session.

See docs/offline-push.md. The delivery log's push (db_proxy.push.dispatcher)
learns from the route server which recipients had no session anywhere
(PushMsgResult.offline_user_ids) and hands them here; providers (a signed
webhook, FCM HTTP v1, APNs HTTP/2) carry the notification, retried with
backoff, bounded, the undeliverable counted as dead letters.
"""
