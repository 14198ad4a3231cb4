"""Staff users holding exactly the permissions a test names, and scientists (case owners)."""

from __future__ import annotations

from importlib import import_module

from django.contrib.auth.models import Group, Permission, User


def user_with(username: str, permissions: list[str]) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


SCIENTISTS = [
    *import_module("console.migrations.0003_scientists_group").PERMISSIONS,
    *import_module("console.migrations.0005_scientists_choose_their_notifications").PERMISSIONS,
]
"""What the migrations give the ``scientists`` group (a transactional test's flush drops the group)."""


def scientist(username: str, email: str = "") -> User:
    """A staff user in the ``scientists`` group and nothing more: a case owner at the admin."""
    group, _ = Group.objects.get_or_create(name="scientists")
    group.permissions.set(
        Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in SCIENTISTS
    )
    user = User.objects.create_user(username, email=email, password="pw-" + username, is_staff=True)
    user.groups.add(group)
    return user
