"""Intake: turning complete folders under the inbox into registered cases.

A folder is registered once, as ``submitted`` when it is a valid case and as ``rejected``
(with the reason) when it is not. A rescan that finds nothing new reads the directory
and one column of the database, and writes nothing. With ``MQIC_INBOX_PER_USER`` the case
folders lie in user folders and each case is its user's (``owners`` says whose, and when not).
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

from resources.jobqueue import FolderManifest, UnsafeFolder, list_folder, read_origin

from ..models import Case, CaseStatus
from . import owners
from .jobs import results_dir
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
    """Register every complete, not yet known folder of the inbox (of each user folder in it, with
    ``MQIC_INBOX_PER_USER``)."""
    inbox = Path(inbox or settings.MQIC_NEW_CASES_DIR)
    report = ScanReport()
    if not inbox.is_dir():
        return report
    run = _Scan(
        now=time.time() if now is None else now,
        known=set(Case.objects.values_list("source_path", flat=True)),
        report=report,
        prefix=functools.cache(label_prefix),  # read once per scan, and only when a folder is registered
    )
    for entry, source_path in listing(inbox):
        if settings.MQIC_INBOX_PER_USER:
            run.guarded(entry, look_at_user_folder, entry, source_path, run)
        elif source_path not in run.known:
            run.guarded(entry, look_at, entry, source_path, run)
    if report.registered or report.rejected or report.errors:
        log.info("scan of %s: %s", inbox, report)
    return report


@dataclass
class _Scan:
    """What one scan shares between the folders it looks at."""

    now: float
    known: set[str]
    """The source paths already registered: a folder is registered once."""
    report: ScanReport
    prefix: Callable[[], str]

    def guarded(self, entry: os.DirEntry, look: Callable, *args) -> None:
        """``look(*args)``; one folder's trouble never stops the scan of the others."""
        try:
            look(*args)
        except FileNotFoundError:
            return  # moved away while we looked
        except Exception as error:
            log.exception("scan: could not look at %s", entry.path)
            self.report.errors.append(f"{storable_text(entry.name)}: {type(error).__name__}: {error}")


def listing(folder: Path) -> list[tuple[os.DirEntry, str]]:
    """The entries of ``folder`` by name, each with the source path it would be registered under;
    hidden ones (``.name``, a folder being copied) are left out."""
    with os.scandir(folder) as entries:
        found = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    return [(entry, storable_text(os.fspath(Path(folder, entry.name).absolute()))) for entry in found]


def look_at_user_folder(entry: os.DirEntry, source_path: str, run: _Scan) -> None:
    """A per-user inbox's entry: each new case folder of a user folder is registered as its user's,
    or rejected (no such user, another's folder); anything else there is rejected once."""
    problem = owners.not_a_user_folder(entry)
    if problem is not None:
        if source_path not in run.known:
            reject(entry.name, source_path, problem, run.report)
        return
    new = [(case, path) for case, path in listing(Path(entry.path)) if path not in run.known]
    if not new:
        return  # nothing new: the user is not even looked up
    folder = owners.user_folder(entry)
    for case_entry, case_path in new:
        run.guarded(case_entry, look_at_case_of, folder, case_entry, case_path, run)


def look_at_case_of(folder: owners.UserFolder, entry: os.DirEntry, source_path: str, run: _Scan) -> None:
    problem = owners.refusal(folder, entry)
    if problem is not None:
        reject(entry.name, source_path, problem, run.report)
    else:
        look_at(entry, source_path, run, owner=folder.user)


def look_at(entry: os.DirEntry, source_path: str, run: _Scan, owner=None) -> None:
    """Register one case folder if it is complete (``rejected`` if it is no valid case)."""
    problem, wish = validate(entry)
    if problem is None and not is_complete(Path(entry.path), run.now):
        run.report.incomplete.append(entry.name)
        return
    if register(entry.name, source_path, problem, None if problem else run.prefix(), wish, owner) is None:
        return
    if problem:
        run.report.rejected.append((entry.name, problem))
    else:
        run.report.registered.append(entry.name)


def reject(name: str, source_path: str, problem: str, report: ScanReport) -> None:
    """Record a folder as rejected, in nobody's name (the operators' case)."""
    if register(name, source_path, problem) is not None:
        report.rejected.append((name, problem))


def register(
    name: str,
    source_path: str,
    problem: str | None,
    prefix: str | None = None,
    wish: Placement = ANYWHERE,
    owner=None,
) -> Case | None:
    """Create the case (``submitted``, or ``rejected`` with ``problem``); ``None`` if a peer did first.

    A rejected case gets no remote label: it never reaches a host (a retry gives it one).
    """
    problem = problem or ran_before(Case(name=storable_text(name)[:255], source_path=source_path, owner=owner))
    status = CaseStatus.REJECTED if problem else CaseStatus.SUBMITTED
    check_allowed(None, status)
    try:
        with transaction.atomic():
            case = Case.objects.create(
                name=storable_text(name)[:255],
                source_path=source_path,
                status=status,
                owner=owner,
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


def ran_before(case: Case) -> str | None:
    """Why a new case must not run: results of a case of this name and owner are already home. Run
    again, it would replace them; and a database restored from an older backup no longer knows the
    case that brought them (its folder, still in the inbox, looks new)."""
    home = results_dir(case)
    origin = read_origin(home)
    if origin is None:
        return None
    return (
        f"results of an earlier run of a case named so are already in {home} (from {origin}; the "
        "database may have been restored from an older backup): move them away, then retry the case"
    )


@dataclass(frozen=True)
class Verdict:
    """A folder checked again (``recheck``): why it is no valid case (``None``: it is one), where it
    asks to run, and whose case it is."""

    problem: str | None
    wish: Placement = ANYWHERE
    owner: object | None = None


def recheck(path: Path) -> Verdict:
    """The registered folder at ``path`` judged again by the rule ``scan`` applies to a new one."""
    try:
        return _judge(path)
    except OSError as error:
        return Verdict(f"the folder cannot be read: {error.strerror}")


def _judge(path: Path) -> Verdict:
    entry = _entry(path)
    if entry is None:
        return Verdict("the case folder is gone from the inbox")
    if not settings.MQIC_INBOX_PER_USER:
        return Verdict(*validate(entry))
    if path.parent.parent != Path(settings.MQIC_NEW_CASES_DIR).absolute():
        return Verdict(owners.not_a_user_folder(entry) or owners.NOT_IN_A_USER_FOLDER)
    user_entry = _entry(path.parent)
    if user_entry is None:
        return Verdict("the user folder is gone from the inbox")
    if problem := owners.not_a_user_folder(user_entry):
        return Verdict(problem)
    folder = owners.user_folder(user_entry)
    if problem := owners.refusal(folder, entry):
        return Verdict(problem)
    return Verdict(*validate(entry), owner=folder.user)


def _entry(path: Path) -> os.DirEntry | None:
    """The directory entry at ``path`` (read from its folder: never through a link at its place)."""
    with os.scandir(path.parent) as entries:
        return next((e for e in entries if e.name == path.name), None)


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
