"""One masking function for every URL, URI and connection string the product prints, logs or records.

Credentials reach this code inside configuration values: `postgresql://reco:PASSWORD@db/reco`,
`http://user:TOKEN@mlflow:5000`, `spark://user:PASSWORD@master:7077`, a libpq string `host=db password=PASSWORD`,
an Airflow connection in JSON (`{"password": "..."}`), a URI query (`?password=...&token=...`) or an environment
assignment (`PGPASSWORD=...`, `MLFLOW_TRACKING_PASSWORD=...`). Anything printed
(stage lines, run summaries, `reco settings`, error messages, MLflow params and tags, run stats, XCom) goes through
`redact` first, so a task log never shows what only the process needed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Key names whose values are secrets in key=value strings, environment assignments, URL queries and JSON objects:
# a name that ends in one of these words, so `sslpassword`, `PGPASSWORD` and `MLFLOW_TRACKING_PASSWORD` are keys too.
_SECRET_WORDS = r"(?:password|passwd|pwd|secret|token|api_?key|secret_?key|fernet_key|private_key)"
_SECRET_KEYS = rf"[A-Za-z0-9_.\-]*{_SECRET_WORDS}"
_KEY_START = r"(?<![A-Za-z0-9_.\-])"
# A quoted value up to its closing quote, escaped quotes and backslashes inside (JSON "a\"b", libpq 'it\'s').
_DOUBLE_QUOTED, _SINGLE_QUOTED = r'(?:[^"\\]|\\.)*', r"(?:[^'\\]|\\.)*"

# Each pattern's `head` is kept, its `secret` replaced.
_PATTERNS = [
    # scheme://user:secret@host  ->  scheme://user:***@host (the user name stays: it says which role connected)
    re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s\"']*:)(?P<secret>[^@\s\"'/]*)(?=@)"),
    # "password": "secret" and 'password': 'secret' (JSON, Python reprs), escaped quotes inside the value
    re.compile(rf"(?P<head>[\"']{_SECRET_KEYS}[\"']\s*:\s*\")(?P<secret>{_DOUBLE_QUOTED})(?=\")", re.IGNORECASE),
    re.compile(rf"(?P<head>[\"']{_SECRET_KEYS}[\"']\s*:\s*')(?P<secret>{_SINGLE_QUOTED})(?=')", re.IGNORECASE),
    # password='quoted value' (libpq), PGPASSWORD="x y" (shell, .env)
    re.compile(rf"(?P<head>{_KEY_START}{_SECRET_KEYS}\s*=\s*')(?P<secret>{_SINGLE_QUOTED})(?=')", re.IGNORECASE),
    re.compile(rf"(?P<head>{_KEY_START}{_SECRET_KEYS}\s*=\s*\")(?P<secret>{_DOUBLE_QUOTED})(?=\")", re.IGNORECASE),
    # password=secret in libpq strings, environment assignments and URL queries (up to the next separator)
    re.compile(rf"(?P<head>{_KEY_START}{_SECRET_KEYS}\s*=\s*)(?P<secret>[^\s&;,\"'][^\s&;,\"']*)", re.IGNORECASE),
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
