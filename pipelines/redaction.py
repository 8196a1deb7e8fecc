"""Secrets out of every message: passwords in URLs and libpq strings, Slack webhook tokens.

Used wherever text may reach a user, a log line or a table the dashboard can read (config errors, database
errors, alert delivery errors). It imports nothing of ours, so any module can use it.
"""

from __future__ import annotations

import re

# The password runs to the last "@" of the URL: an unencoded "@" or "/" in it is still a password (a
# greedy match over-redacts a path holding "@", never under-redacts).
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s'\"]*):(?P<pw>[^\s'\"]*)@")
# libpq quotes a value with '...', escaping a quote or backslash inside it with a backslash.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^&\s'\";]+)", re.I
)
_SLACK_WEBHOOK = re.compile(
    r"(?P<head>hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[^\s'\"<>]+"
)


def redact(text: str) -> str:
    """The text with every password and webhook token replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:***@" if m["pw"] else m[0], text)
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}***", text)
    return _SLACK_WEBHOOK.sub(lambda m: f"{m['head']}***", text)
