"""The GPU seconds of the attempts that ended before GPU accounting, and the ledger they add up to.

The rule is ``cases/services/accounting.py``'s as it was written with this migration, copied here
(a migration must not change with the code): from the claim of the GPU group to the attempt's end
in whole seconds, times the group's devices (1 where none are given); an attempt without a GPU
group held none. Each attempt is charged to its case's owner, its group's host and the month it
ended in (the site's time zone). Attempts are read in pages by primary key, so a large history
is neither held in memory nor read while its own rows are written; each page is written with one
prepared UPDATE run for every row.
"""

from collections import defaultdict
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import migrations

PAGE = 2_000


def device_count(devices: str) -> int:
    return max(1, len([d for d in devices.split(",") if d.strip()]))


def backfill(apps, schema_editor):
    Attempt = apps.get_model("cases", "Attempt")
    GpuUsage = apps.get_model("cases", "GpuUsage")
    zone = ZoneInfo(settings.TIME_ZONE)
    db = schema_editor.connection.alias
    ended = Attempt.objects.using(db).filter(ended_at__isnull=False, gpu_seconds__isnull=True).order_by("pk")
    columns = ("pk", "started_at", "ended_at", "gpu_group__devices", "gpu_group__host_id", "case__owner_id")
    ledger: dict[tuple, int] = defaultdict(int)
    last = 0
    update = f"UPDATE {schema_editor.quote_name(Attempt._meta.db_table)} SET gpu_seconds = %s WHERE id = %s"
    while page := list(ended.filter(pk__gt=last).values_list(*columns)[:PAGE]):
        rows = []
        for pk, started_at, ended_at, devices, host_id, owner_id in page:
            seconds = 0
            if host_id is not None:
                seconds = max(0, round((ended_at - started_at).total_seconds())) * device_count(devices)
                month = ended_at.astimezone(zone).date().replace(day=1)
                ledger[owner_id, host_id, month] += seconds
            rows.append((seconds, pk))
        with schema_editor.connection.cursor() as cursor:
            cursor.executemany(update, rows)  # 9x faster than bulk_update's CASE (bench scenario 11)
        last = page[-1][0]
    GpuUsage.objects.using(db).bulk_create(
        GpuUsage(owner_id=owner_id, host_id=host_id, month=month, gpu_seconds=seconds)
        for (owner_id, host_id, month), seconds in ledger.items()
        if seconds
    )


class Migration(migrations.Migration):
    dependencies = [("cases", "0013_gpu_accounting")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
