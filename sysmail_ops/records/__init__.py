"""What happened: the send journal and log (``sendlog``), the email archive
(``archive``) and the suppression list (``suppression``); received mail fetched
over IMAP (``received``) and the bounces found in it (``bounces``), imported
where used.

May import: ``config``, ``mail``, ``store``, ``errors``.
"""

from sysmail_ops.records import archive, sendlog, suppression
from sysmail_ops.records.sendlog import Journal, fold_orphans, new_batch_id

__all__ = ["Journal", "archive", "fold_orphans", "new_batch_id", "sendlog", "suppression"]
