"""A backup of MQIC's rows and its restore, as an operator's dump and reload would do them.

Every row of MQIC's own apps is written out (Django's serializer, as ``dumpdata``) and, on
restore, the tables are emptied and the rows put back with their primary keys (as ``loaddata``):
the database is then exactly as old as the backup, while the hosts and the results folder went on.
"""

from __future__ import annotations

from django.apps import apps
from django.core import serializers
from django.db import transaction

APPS = ("resources", "cases", "console")


def _models():
    """Every concrete model of MQIC's apps, in the order their rows may be loaded."""
    return [
        model
        for label in APPS
        for model in apps.get_app_config(label).get_models()
        if not model._meta.proxy and model._meta.managed
    ]


def take() -> str:
    return serializers.serialize("json", [row for model in _models() for row in model._base_manager.all()])


def restore(backup: str) -> None:
    with transaction.atomic():
        for model in reversed(_models()):
            model._base_manager.all()._raw_delete(model._base_manager.db)
        for row in serializers.deserialize("json", backup):
            row.save()
