"""Remote labels: how a pueue task is tied back to its case.

A label is ``<MQIC_LABEL_PREFIX><installation key>_<case id>``. The installation key is
made once per database, so two installations, or a new database on the same host, never
claim each other's tasks.
"""

from __future__ import annotations

import secrets

from django.conf import settings

from ..models import Installation


def installation_key() -> str:
    """Not cached: every process must see the one row, even after the database is replaced."""
    configured = getattr(settings, "MQIC_INSTALLATION_KEY", "")
    if configured:
        return configured
    row, _ = Installation.objects.get_or_create(pk=1, defaults={"key": secrets.token_hex(4)})
    return row.key


def label_prefix() -> str:
    """Every label of this installation starts with this; other tasks are not ours."""
    return f"{settings.MQIC_LABEL_PREFIX}{installation_key()}_"


def label_for(case_id: int, prefix: str | None = None) -> str:
    return f"{prefix or label_prefix()}{case_id}"


def case_id_from_label(label: str | None, prefix: str) -> int | None:
    """The case id in one of our labels (those starting with ``prefix``), or ``None``."""
    if not label or not label.startswith(prefix):
        return None
    tail = label[len(prefix) :]
    return int(tail) if tail.isdigit() else None
