"""One masking function for every URL, URI and connection string the product prints, logs or records.

Credentials reach this code inside configuration values: `postgresql://reco:PASSWORD@db/reco`,
`http://user:TOKEN@mlflow:5000`, `spark://user:PASSWORD@master:7077`, a libpq string `host=db password=PASSWORD`,
an Airflow connection in JSON (`{"password": "..."}`) or a URI query (`?password=...&token=...`). Anything printed
(stage lines, run summaries, `reco settings`, error messages, MLflow params and tags, run stats, XCom) goes through
`redact` first, so a task log never shows what only the process needed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Key names whose values are secrets in key=value strings, URL queries and JSON objects.
_SECRET_KEYS = r"(?:password|passwd|pwd|secret|token|access_token|api_key|apikey|private_key|client_secret)"

# Each pattern's `head` is kept, its `secret` replaced.
_PATTERNS = [
    # scheme://user:secret@host  ->  scheme://user:***@host (the user name stays: it says which role connected)
    re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s\"']*:)(?P<secret>[^@\s\"'/]*)(?=@)"),
    # "password": "secret" (JSON, Python reprs)
    re.compile(rf"(?P<head>[\"']{_SECRET_KEYS}[\"']\s*:\s*[\"'])(?P<secret>[^\"']*)(?=[\"'])", re.IGNORECASE),
    # password=secret in libpq strings and URL queries (up to the next separator)
    re.compile(rf"(?P<head>(?<![A-Za-z0-9_]){_SECRET_KEYS}=)(?P<secret>[^\s&;,\"']*)", re.IGNORECASE),
]


def redact(text: object) -> str:
    """`text` with every credential it holds replaced by ***; any other character unchanged."""
    masked = str(text)
    for pattern in _PATTERNS:
        masked = pattern.sub(lambda match: match["head"] + (MASK if match["secret"] else ""), masked)
    return masked


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`scheme://user:password@host/...` -> (`scheme://host/...`, user, password), URL-decoded; other URLs
    unchanged with (None, None). For clients that take credentials separately and print the URL they use (MLflow
    prints `View run ... at: <tracking URI>` after every run)."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, unquote(parts.username or "") or None, unquote(parts.password or "") or None
