"""A face: ``sysmail-ops serve``, the small HTTP server behind the links in mail
(survey answers, one-click unsubscribe).

May import anything below the faces; no other face.
"""

from sysmail_ops.web.server import SurveyServer, make_server

__all__ = ["SurveyServer", "make_server"]
