"""Locking and releasing GPU groups.

Every change of a group's status is a single conditional UPDATE (compare-and-swap): the
row changes only if it is still in the state the caller saw, so two workers can never
both win the same group. Each assignment bumps ``lease_generation``; a release names the
generation it holds, so a stale worker cannot free a group that was re-assigned since.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import GpuGroup, HpcHost

Status = GpuGroup.Status


def lock_free_group(holder_id: int, *, host: HpcHost | None = None) -> GpuGroup | None:
    """Assign a free, unflagged group to ``holder_id``; ``None`` when every group is taken."""
    candidates = GpuGroup.objects.filter(status=Status.AVAILABLE, blocked_reason="", host__enabled=True)
    if host is not None:
        candidates = candidates.filter(host=host)
    candidates = candidates.order_by("lease_generation", "name").values_list("pk", flat=True)
    # Try the first free group; if a peer wins it, the next query no longer sees it as free.
    while (group_id := candidates.first()) is not None:
        try:
            with transaction.atomic():
                won = GpuGroup.objects.filter(pk=group_id, status=Status.AVAILABLE, blocked_reason="").update(
                    status=Status.ASSIGNED,
                    holder_id=holder_id,
                    lease_generation=F("lease_generation") + 1,
                    assigned_at=timezone.now(),
                )
        except IntegrityError:
            return None  # the holder already holds a group (a peer claimed it): no second lock
        if won:
            return GpuGroup.objects.select_related("host").get(pk=group_id)
    return None


def lock_group(group_id: int, holder_id: int) -> GpuGroup | None:
    """Assign this one group to ``holder_id`` if it is free; ``None`` when it is not.

    For adopting a task that already runs in the group: unlike ``lock_free_group`` it
    ignores ``blocked_reason``, which only keeps new work out.
    """
    with transaction.atomic():
        won = GpuGroup.objects.filter(pk=group_id, status=Status.AVAILABLE).update(
            status=Status.ASSIGNED,
            holder_id=holder_id,
            lease_generation=F("lease_generation") + 1,
            assigned_at=timezone.now(),
        )
    return GpuGroup.objects.select_related("host").get(pk=group_id) if won else None


def release_group(group_id: int, *, holder_id: int, generation: int) -> bool:
    """Free the group if ``holder_id`` still holds it under ``generation``; report whether it did."""
    with transaction.atomic():
        return bool(
            GpuGroup.objects.filter(
                pk=group_id, status=Status.ASSIGNED, holder_id=holder_id, lease_generation=generation
            ).update(status=Status.AVAILABLE, holder_id=None, assigned_at=None)
        )


def set_enabled(group_id: int, enabled: bool) -> bool:
    """Disable a free group, or enable a disabled one. An assigned group is left alone."""
    old, new = (Status.DISABLED, Status.AVAILABLE) if enabled else (Status.AVAILABLE, Status.DISABLED)
    with transaction.atomic():
        return bool(GpuGroup.objects.filter(pk=group_id, status=old).update(status=new))


def set_blocked(group_id: int, reason: str) -> bool:
    """Flag (or with ``reason=""`` unflag) a group whose pueue group has work we did not start."""
    with transaction.atomic():
        return bool(
            GpuGroup.objects.filter(pk=group_id).exclude(blocked_reason=reason).update(blocked_reason=reason)
        )


def configure_from_settings(settings) -> tuple[HpcHost, list[GpuGroup]]:
    """Create or update the host and its GPU groups from ``MQIC_*`` settings; safe to repeat.

    Groups no longer listed are disabled when free (never deleted: old cases point at them);
    an existing group keeps the status an operator gave it.
    """
    host, _ = HpcHost.objects.update_or_create(
        name=settings.MQIC_HPC_NAME,
        defaults={
            "hostname": settings.MQIC_HPC_HOST,
            "port": settings.MQIC_HPC_PORT,
            "username": settings.MQIC_HPC_USER,
            "key_path": settings.MQIC_HPC_KEY,
            "known_hosts_path": settings.MQIC_HPC_KNOWN_HOSTS,
            "base_dir": settings.MQIC_HPC_BASE_DIR,
            "pueue_command": settings.MQIC_PUEUE,
        },
    )
    groups = []
    for pueue_group in settings.MQIC_GPU_GROUPS:
        group, _ = GpuGroup.objects.get_or_create(
            host=host, pueue_group=pueue_group, defaults={"name": group_name_for(host, pueue_group)}
        )
        groups.append(group)
    for stale in host.gpu_groups.exclude(pueue_group__in=settings.MQIC_GPU_GROUPS):
        set_enabled(stale.pk, False)
    return host, groups


def group_name_for(host: HpcHost, pueue_group: str) -> str:
    """Group names are global; prefix the host's only when another host already uses the name."""
    taken = GpuGroup.objects.filter(name=pueue_group).exclude(host=host).exists()
    return f"{host.name}-{pueue_group}" if taken else pueue_group
