"""A face: the main job on the embedded defaults (``sysmail-ops demo``) and all
its fixtures: demo accounts, templates, cases, approval events, a survey,
report subscriptions, and the demo CRM data the sales report reads.

May import anything below the faces, and ``sink`` (it runs the capture server).
"""

from sysmail_ops.demo.main import SINK_HOST, SINK_PORT, run

__all__ = ["SINK_HOST", "SINK_PORT", "run"]
