"""Staff users holding exactly the permissions a test names, and scientists."""

from __future__ import annotations

from importlib import import_module

from django.contrib.auth.models import Group, Permission, User

SCIENTISTS = import_module("console.migrations.0003_scientists_group")


def user_with(username: str, permissions: list[str]) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def scientist(username: str) -> User:
    """A staff user in the ``scientists`` group (made as its migration makes it, if a transactional
    test's flush took it away); the password is ``pw-<username>``."""
    group, _ = Group.objects.get_or_create(name=SCIENTISTS.NAME)
    for app_label, codename in SCIENTISTS.PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    user = User.objects.create_user(username, password="pw-" + username, is_staff=True)
    user.groups.add(group)
    return user
