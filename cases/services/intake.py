"""Intake: turning complete folders under the inbox into registered cases.

A folder is registered once, as ``submitted`` when it is a valid case and as ``rejected``
(with the reason) when it is not. A rescan that finds nothing new reads the directory
and one column of the database, and writes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from ..models import Case, CaseStatus
from .labels import label_for, label_prefix
from .transitions import check_allowed, record_event

log = logging.getLogger("mqic.intake")


@dataclass
class ScanReport:
    registered: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    def __str__(self):
        return (
            f"registered {len(self.registered)}, rejected {len(self.rejected)}, "
            f"waiting for {len(self.incomplete)} incomplete folder(s)"
        )


def scan(inbox: Path | None = None, *, now: float | None = None) -> ScanReport:
    """Register every complete, not yet known folder of the inbox."""
    inbox = Path(inbox or settings.MQIC_NEW_CASES_DIR)
    report = ScanReport()
    if not inbox.is_dir():
        return report
    known = set(Case.objects.values_list("source_path", flat=True))
    prefix = None
    now = time.time() if now is None else now
    with os.scandir(inbox) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            source_path = storable_text(os.fspath(Path(inbox, entry.name).absolute()))
            if source_path in known or entry.name.startswith("."):
                continue
            try:
                problem = validate(entry)
                if problem is None and not is_complete(Path(entry.path), now):
                    report.incomplete.append(entry.name)
                    continue
            except FileNotFoundError:
                continue  # moved away while we looked
            prefix = prefix or label_prefix()
            if register(entry.name, source_path, problem, prefix) is not None:
                (
                    report.rejected.append((entry.name, problem))
                    if problem
                    else report.registered.append(entry.name)
                )
    if report.registered or report.rejected:
        log.info("scan of %s: %s", inbox, report)
    return report


def register(name: str, source_path: str, problem: str | None, prefix: str | None = None) -> Case | None:
    """Create the case (``submitted``, or ``rejected`` with ``problem``); ``None`` if a peer did first."""
    status = CaseStatus.REJECTED if problem else CaseStatus.SUBMITTED
    check_allowed(None, status)
    try:
        with transaction.atomic():
            case = Case.objects.create(
                name=storable_text(name)[:255],
                source_path=source_path,
                status=status,
                last_error=problem or "",
            )
            case.label = label_for(case.pk, prefix)
            case.save(update_fields=["label"])
            record_event(case.pk, problem or "new case folder", new=status, detail={"source_path": source_path})
    except IntegrityError:
        return None  # another scanner registered the same folder a moment ago
    return case


def validate(entry: os.DirEntry) -> str | None:
    """Why this folder is not a valid case, or ``None`` when it is."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return "the folder name is not valid UTF-8 and cannot be stored; rename it"
    if len(entry.name) > 255:
        return "the folder name is longer than 255 characters"
    if entry.is_symlink():
        return "the case folder is a symbolic link; copy the folder itself into the inbox"
    if not entry.is_dir():
        return "not a folder"
    root = Path(entry.path)
    if not os.access(root, os.R_OK | os.X_OK):
        return "the folder is not readable"
    script = root / settings.MQIC_ENTRY_SCRIPT
    if not script.is_file() or script.is_symlink():
        return f"no entry script: {settings.MQIC_ENTRY_SCRIPT} is missing"
    try:
        return unsafe_content(root)
    except OSError as error:
        return f"cannot read the folder: {error.strerror}: {storable_text(str(error.filename))}"


def unsafe_content(root: Path) -> str | None:
    """Refuse links out of the folder, special files and unreadable files: uploads never follow them."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            relative = storable_text(os.fspath(path.relative_to(root)))
            if path.is_symlink():
                target = path.resolve()
                if target != real_root and real_root not in target.parents:
                    return f"{relative} is a symbolic link pointing out of the case folder"
            elif not (path.is_dir() or path.is_file()):
                return f"{relative} is not a regular file or folder"
            elif not os.access(path, os.R_OK):
                return f"{relative} is not readable"
    return None


def is_complete(root: Path, now: float) -> bool:
    """A folder is complete with its marker file, or after a quiet period with no change."""
    if (root / settings.MQIC_READY_MARKER).exists():
        return True
    newest = root.lstat().st_mtime
    for dirpath, _dirnames, filenames in os.walk(root):
        newest = max(newest, os.lstat(dirpath).st_mtime, *(os.lstat(Path(dirpath, f)).st_mtime for f in filenames))
    return now - newest >= settings.MQIC_QUIET_SECONDS


def storable_text(text: str) -> str:
    """File names are bytes; keep undecodable ones readable and storable instead of crashing."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _raise(error: OSError) -> None:
    raise error
