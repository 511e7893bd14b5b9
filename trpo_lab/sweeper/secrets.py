"""A storage URL's password stays in the process given it: the one place that masks it.

Logs, errors and every file a sweep or its jobs write (.hydra/, multirun.yaml,
checkpoints, wandb, the report) carry `mask_url(url)`, user:***@host. The
sweeper hands the real URL to its jobs' processes in the environment variable
STORAGE_ENV (storage.job_storage_url reads it back); where a launcher does not
pass the environment on, give the password outside the URL (PGPASSFILE,
~/.pgpass; docs/scaling.md). No import of Optuna here, so loggers and the
report use it cheaply.
"""
from __future__ import annotations

import re
from typing import Optional
from urllib.parse import unquote

STORAGE_ENV = "TRPO_OPTUNA_STORAGE"  # the real storage URL, from the sweeper to its jobs' processes
MASK = "***"

# scheme://user:PASSWORD@ anywhere in a text, and ?password= / &password= query arguments
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#\s'\"]*:)(?P<pw>[^@/?#\s'\"]*)(?P<at>@)")
_QUERY_PW = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def _passwords(url: str) -> list[str]:
    found = [m.group("pw") for m in (*_USERINFO.finditer(url), *_QUERY_PW.finditer(url)) if m.group("pw")]
    return [p for p in found if p != MASK]


def mask_url(url: Optional[str]) -> Optional[str]:
    """`url` (or any text holding URLs) with each password, user:PASSWORD@ or ?password=, replaced by ***."""
    if not url:
        return url
    url = _USERINFO.sub(lambda m: m.group("head") + MASK + m.group("at") if m.group("pw") else m.group(0), url)
    return _QUERY_PW.sub(lambda m: m.group("head") + MASK, url)


def mask_text(text: str, url: Optional[str]) -> str:
    """`text` (an error message, a log line) with every copy of `url`'s password, raw or decoded, masked."""
    text = mask_url(text)
    for pw in _passwords(url or ""):
        for form in {pw, unquote(pw)}:
            text = text.replace(form, MASK)
    return text


def has_secret(url: Optional[str]) -> bool:
    """Whether `url` holds a password that mask_url hides."""
    return bool(url) and mask_url(url) != url


