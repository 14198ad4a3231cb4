"""Intake: turning complete folders under the inbox into registered cases.

A folder is registered once, as ``submitted`` when it is a valid case and as ``rejected``
(with the reason) when it is not. A rescan that finds nothing new reads the directory
and one column of the database, and writes nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from resources.jobqueue import FolderManifest, UnsafeFolder, list_folder

from ..models import Case, CaseStatus
from .labels import label_for, label_prefix
from .placement import ANYWHERE, Placement, read_placement
from .transitions import check_allowed, record_event

log = logging.getLogger("mqic.intake")


@dataclass
class ScanReport:
    registered: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __str__(self):
        text = (
            f"registered {len(self.registered)}, rejected {len(self.rejected)}, "
            f"waiting for {len(self.incomplete)} incomplete folder(s)"
        )
        return text + (
            f", could not look at {len(self.errors)}: {'; '.join(self.errors[:3])}" if self.errors else ""
        )


def scan(inbox: Path | None = None, *, now: float | None = None) -> ScanReport:
    """Register every complete, not yet known folder of the inbox."""
    inbox = Path(inbox or settings.MQIC_NEW_CASES_DIR)
    report = ScanReport()
    if not inbox.is_dir():
        return report
    known = set(Case.objects.values_list("source_path", flat=True))
    prefix = functools.cache(label_prefix)  # read once per scan, and only when a folder is registered
    now = time.time() if now is None else now
    with os.scandir(inbox) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            source_path = storable_text(os.fspath(Path(inbox, entry.name).absolute()))
            if source_path in known or entry.name.startswith("."):
                continue
            try:
                look_at(entry, source_path, now, report, prefix)
            except FileNotFoundError:
                continue  # moved away while we looked
            except Exception as error:  # one folder's trouble never stops the scan of the others
                log.exception("scan: could not look at %s", source_path)
                report.errors.append(f"{storable_text(entry.name)}: {type(error).__name__}: {error}")
    if report.registered or report.rejected or report.errors:
        log.info("scan of %s: %s", inbox, report)
    return report


def look_at(
    entry: os.DirEntry, source_path: str, now: float, report: ScanReport, prefix: Callable[[], str]
) -> None:
    """Register one folder of the inbox if it is complete (``rejected`` if it is no valid case)."""
    problem, wish = validate(entry)
    if problem is None and not is_complete(Path(entry.path), now):
        report.incomplete.append(entry.name)
        return
    if register(entry.name, source_path, problem, None if problem else prefix(), wish) is not None:
        (report.rejected.append((entry.name, problem)) if problem else report.registered.append(entry.name))


def register(
    name: str, source_path: str, problem: str | None, prefix: str | None = None, wish: Placement = ANYWHERE
) -> Case | None:
    """Create the case (``submitted``, or ``rejected`` with ``problem``); ``None`` if a peer did first.

    A rejected case gets no remote label: it never reaches a host (a retry gives it one).
    """
    status = CaseStatus.REJECTED if problem else CaseStatus.SUBMITTED
    check_allowed(None, status)
    try:
        with transaction.atomic():
            case = Case.objects.create(
                name=storable_text(name)[:255],
                source_path=source_path,
                status=status,
                last_error=problem or "",
                wanted_host=wish.host,
                wanted_group=wish.gpu_group,
            )
            if not problem:
                case.label = label_for(case.pk, prefix)
                case.save(update_fields=["label"])
            record_event(case.pk, problem or "new case folder", new=status, detail={"source_path": source_path})
    except IntegrityError:
        return None  # another scanner registered the same folder a moment ago
    return case


CONTROL = {"Cc", "Cf", "Zl", "Zp"}
"""Unicode categories no case name may hold: they break mail headers and hide what a name says."""


def validate(entry: os.DirEntry) -> tuple[str | None, Placement]:
    """Why this folder is not a valid case (``None`` when it is), and where it asks to run.

    What may leave this machine is decided by ``list_folder``, the same rule the upload applies:
    intake accepts exactly what submission can send.
    """
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return "the folder name is not valid UTF-8 and cannot be stored; rename it", ANYWHERE
    if len(os.fsencode(entry.name)) > 255:
        return "the folder name is longer than 255 bytes", ANYWHERE
    if any(unicodedata.category(c) in CONTROL for c in entry.name):
        why = "the folder name holds control characters (a newline, a tab, a direction mark...); rename it"
        return why, ANYWHERE
    if entry.is_symlink():
        return "the case folder is a symbolic link; copy the folder itself into the inbox", ANYWHERE
    if not entry.is_dir():
        return "not a folder", ANYWHERE
    try:
        list_case(Path(entry.path))
        return None, read_placement(Path(entry.path))
    except UnsafeFolder as problem:
        return storable_text(str(problem)), ANYWHERE


def list_case(root: Path) -> FolderManifest:
    """A case folder as it would be sent (``list_folder``), holding its entry script as a plain file;
    ``UnsafeFolder`` says why not. Intake registers, and submission sends, only what passes this."""
    listed = list_folder(root)
    script = next((e for e in listed.entries if e.parts == (settings.MQIC_ENTRY_SCRIPT,)), None)
    if script is None or script.kind != "file":
        raise UnsafeFolder(f"no entry script: {settings.MQIC_ENTRY_SCRIPT} is missing (or is not a plain file)")
    return listed


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
