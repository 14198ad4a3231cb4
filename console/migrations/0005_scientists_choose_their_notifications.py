"""The ``scientists`` group may see and edit their own notification choices (the admin shows each
user their own row only: ``console.admin.NotificationPreferenceAdmin``)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

NAME = "scientists"
PERMISSIONS = [
    ("console", "view_notificationpreference"),
    ("console", "add_notificationpreference"),
    ("console", "change_notificationpreference"),
]


def permissions(apps):
    """Permissions are made after migrate; a data migration that hands them out makes them first."""
    config = apps.get_app_config("console")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    return [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in PERMISSIONS]


def grant(apps, schema_editor):
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=NAME)
    group.permissions.add(*permissions(apps))


def revoke(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name=NAME).first()
    if group is not None:
        group.permissions.remove(*permissions(apps))


class Migration(migrations.Migration):
    dependencies = [("console", "0004_notification_recipients_and_choices")]

    operations = [migrations.RunPython(grant, revoke)]
