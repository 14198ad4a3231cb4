"""Whoever sees cases today keeps seeing every case: ``view_all_cases`` is given to each user and
group that holds ``cases.view_case`` (superusers need nothing). Without it, a user sees only the
cases they own (``cases/access.py``)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def ensure_permissions(apps) -> None:
    """Permissions are made after migrate; a data migration that hands them out makes them first."""
    config = apps.get_app_config("cases")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    config.models_module = None


def grant(apps, schema_editor):
    ensure_permissions(apps)
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    User = apps.get_model("auth", "User")
    view = Permission.objects.get(content_type__app_label="cases", codename="view_case")
    see_all = Permission.objects.get(content_type__app_label="cases", codename="view_all_cases")
    for group in Group.objects.filter(permissions=view).exclude(name="scientists"):
        group.permissions.add(see_all)
    for user in User.objects.filter(user_permissions=view):
        user.user_permissions.add(see_all)


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0009_case_owner"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
