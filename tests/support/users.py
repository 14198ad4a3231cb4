"""Staff users holding exactly the permissions a test names."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User


def user_with(username: str, permissions: list[str]) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user
