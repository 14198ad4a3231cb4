"""The ``scientists`` group: exactly what a case owner needs, and no operator permission.

A staff user in it sees the cases they own in the admin (``cases/access.py`` narrows every list,
page, log and result file to those), follows their logs, reads their results, and may cancel and
retry them. Hosts, GPU groups, orphans, passes and other owners' cases stay the operators'.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

NAME = "scientists"
PERMISSIONS = [
    ("cases", "view_case"),
    ("cases", "retry_case"),
    ("cases", "cancel_case"),
    ("console", "view_results"),
]


def create_group(apps, schema_editor):
    for label in ("cases", "console"):
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=NAME)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_notification_outbox"),
        ("cases", "0010_operators_keep_seeing_every_case"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
