"""The one sending pipeline: deliveries, dedupe, the send engine, sessions kept
between micro-batches, the compose worker process, the retry queue, and the
connection test.

Every use case delivers through ``send``, ``send_batch`` or ``send_deliveries``;
nothing else talks SMTP and nothing else writes the send log.
May import: ``templates``, ``records``, ``config``, ``mail``, ``store``, ``inputs``, ``errors``.
"""

from sysmail_ops.mail.mime import Attachment, InlineImage
from sysmail_ops.sending import (
    batch,
    connection_test,
    delivery,
    engine,
    links,
    retry,
    session,
    worker,
)
from sysmail_ops.sending.batch import (
    Delivery,
    SendOptions,
    SendResult,
    personal_unsubscribe,
    records_to_deliveries,
    send,
    send_batch,
    send_deliveries,
)
from sysmail_ops.sending.retry import retry_deferred

__all__ = [
    "Attachment",
    "Delivery",
    "InlineImage",
    "SendOptions",
    "SendResult",
    "batch",
    "connection_test",
    "delivery",
    "engine",
    "links",
    "personal_unsubscribe",
    "records_to_deliveries",
    "retry",
    "retry_deferred",
    "send",
    "send_batch",
    "send_deliveries",
    "session",
    "worker",
]
