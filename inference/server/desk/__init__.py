"""The review desk: a web UI on the HTTP API, to read tagged documents, correct tags and retrain.

Pages are Jinja2 templates (autoescaped) with one small plain-JavaScript file and one
stylesheet, all served by the app itself (no CDN, works offline). Modules, one job each:

  config    DeskConfig: write token, read-only reason, upload limits
  backend   DeskBackend: the interface to the label store, suggest, retrain and registry
            (implemented in policylens/cli/desk.py; inference never imports training)
  pipeline  reading uploads and tagging them the way `policylens tag` does, in chunks
  inbox     the uploaded documents and their records, kept on disk
  jobs      background work (tagging, retraining) with progress the page polls
  views     what the pages show: current labels, low confidence, counts, exports
  core      Desk: the state and actions behind the routes
  uploads   the upload body, its decoding and its limits
  routes    the pages and the JSON API
"""

from inference.server.desk.backend import DeskBackend, DeskError, Progress
from inference.server.desk.config import (
    TOKEN_ENV,
    TOKEN_HEADER,
    DeskConfig,
    token_from_env,
)

__all__ = ["TOKEN_ENV", "TOKEN_HEADER", "DeskBackend", "DeskConfig", "DeskError", "Progress", "token_from_env"]
