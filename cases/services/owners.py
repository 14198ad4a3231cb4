"""Whose case a folder is, in a per-user inbox (``MQIC_INBOX_PER_USER``).

The inbox then holds one folder per Django user name, ``<inbox>/<username>/<case folder>/``, and a
case is the user's whose folder it lies in. A folder's name is data from outside: it names a user
only when an active user has exactly that name. On a shared file system anyone who may write into
another's folder could drop a case in their name, so a case folder is taken only when whoever owns
the user folder on disk also owns the case folder (``st_uid`` of each, by ``lstat``: a link is never
followed; ``MQIC_INBOX_CHECK_OWNER``). A folder refused for either reason is recorded rejected in
nobody's name (the operators'): it was never shown to be that user's.

What lies directly in a per-user inbox and is no folder (a file, a link, a fifo) is no user folder:
it is recorded rejected once, in nobody's name, saying where case folders go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model

from resources.remote.untar import shown

USERNAME_MAX = 150
"""Django's user names are at most this long: a longer folder name names nobody, without a query."""


@dataclass(frozen=True)
class UserFolder:
    """A folder directly in a per-user inbox: the name it has, who owns it on disk, and the active
    user of that name (``None``: nobody)."""

    name: str
    uid: int
    user: object | None

    @property
    def unknown(self) -> str:
        """Why nothing in this folder is anybody's case: no active user has its name."""
        return (
            f"no active user is named {shown(self.name)!r}: a case folder goes into the folder named after "
            "its owner's user name (<inbox>/<username>/<case folder>/); once the user exists, Re-check folder"
        )


NOT_IN_A_USER_FOLDER = (
    "a per-user inbox takes case folders only in user folders (<inbox>/<username>/<case folder>/)"
)


def not_a_user_folder(entry: os.DirEntry) -> str | None:
    """Why an entry directly in a per-user inbox is no user folder (``None``: it is one)."""
    if entry.is_symlink():
        return "a per-user inbox holds one folder per user, and this is a symbolic link, which is never followed"
    if not entry.is_dir(follow_symlinks=False):
        return (
            "a per-user inbox holds one folder per user and nothing else: a case folder goes into "
            "<inbox>/<username>/<case folder>/"
        )
    return None


def user_folder(entry: os.DirEntry) -> UserFolder:
    """The user folder ``entry`` is (see ``not_a_user_folder`` first), and the active user it names."""
    return UserFolder(entry.name, entry.stat(follow_symlinks=False).st_uid, active_user(entry.name))


def active_user(name: str):
    """The active user whose user name is exactly ``name``; ``None`` for a name no user can have."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if not name or len(name) > USERNAME_MAX:
        return None
    model = get_user_model()
    return model._default_manager.filter(**{model.USERNAME_FIELD: name, "is_active": True}).first()


def refusal(folder: UserFolder, case_entry: os.DirEntry) -> str | None:
    """Why the case folder ``case_entry`` of ``folder`` is not its user's case (``None``: it is)."""
    if folder.user is None:
        return folder.unknown
    if not settings.MQIC_INBOX_CHECK_OWNER:
        return None
    uid = case_entry.stat(follow_symlinks=False).st_uid
    if uid == folder.uid:
        return None
    return (
        f"the case folder belongs to uid {uid}, but the user folder {shown(folder.name)!r} to uid {folder.uid}: "
        "only whoever owns a user folder drops cases in that user's name"
    )
