"""Locking and releasing GPU groups.

Every change of a group's status is a single conditional UPDATE (compare-and-swap): the
row changes only if it is still in the state the caller saw, so two workers can never
both win the same group. Each assignment bumps ``lease_generation``; a release names the
generation it holds, so a stale worker cannot free a group that was re-assigned since.

A group the deployment's host configuration no longer lists is ``retired``: it is never handed
out, it is disabled at once if free, and a release disables it instead of freeing it, so it
cannot come back into use by way of a case that still held it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils import timezone

from .models import GpuGroup, HostSlot, HpcHost

Status = GpuGroup.Status


def assignable_groups():
    """Free, unflagged, listed groups on enabled hosts that neither back off nor have every connection slot
    in use: where new work may go now."""
    now = timezone.now()
    usable_host = Q(host__enabled=True) & (Q(host__next_try_at__isnull=True) | Q(host__next_try_at__lte=now))
    full = (
        HostSlot.objects.filter(expires_at__gt=now, number__lt=settings.MQIC_HOST_MAX_CONNECTIONS)
        .values("host")
        .annotate(taken=Count("pk"))
        .filter(taken__gte=settings.MQIC_HOST_MAX_CONNECTIONS)
        .values("host")
    )
    return GpuGroup.objects.filter(usable_host, status=Status.AVAILABLE, blocked_reason="", retired=False).exclude(
        host__in=full
    )


def free_groups(*, host: HpcHost | None = None, host_name: str = "", group_name: str = "") -> list[GpuGroup]:
    """The assignable groups (of that host, or that very group, when named), in the order they are
    handed out: least used first. One read, for a caller that places many holders at once."""
    candidates = assignable_groups()
    if host is not None:
        candidates = candidates.filter(host=host)
    if host_name:
        candidates = candidates.filter(host__name=host_name)
    if group_name:
        candidates = candidates.filter(name=group_name)
    return list(candidates.select_related("host").order_by("lease_generation", "name"))


def take_group(group: GpuGroup, holder_id: int, *, lifting: str = "") -> bool | None:
    """Assign ``group`` to ``holder_id`` if it is still free as read (the same lease generation);
    on success ``group`` carries its new generation. ``False``: a peer took it meanwhile.
    ``None``: the holder already holds a group (a peer placed it), so it gets no second one.
    ``lifting``: a block whose reason starts so is lifted by the same update (the holder is the
    very work it was blocked for)."""
    now = timezone.now()
    unblocked = Q(blocked_reason="") | Q(blocked_reason__startswith=lifting) if lifting else Q(blocked_reason="")
    try:
        with transaction.atomic():
            still_free = GpuGroup.objects.filter(
                unblocked,
                pk=group.pk,
                status=Status.AVAILABLE,
                retired=False,
                lease_generation=group.lease_generation,
            )
            next_lease = F("lease_generation") + 1
            won = still_free.update(
                status=Status.ASSIGNED,
                holder_id=holder_id,
                lease_generation=next_lease,
                assigned_at=now,
                blocked_reason="",
            )
    except IntegrityError:
        return None
    if not won:
        return False
    group.status, group.holder_id, group.assigned_at = Status.ASSIGNED, holder_id, now
    group.lease_generation += 1
    return True


def lock_free_group(
    holder_id: int, *, host: HpcHost | None = None, host_name: str = "", group_name: str = ""
) -> GpuGroup | None:
    """Assign an assignable group (of that host, or that very group, when named) to ``holder_id``;
    ``None`` when every such group is taken."""
    for group in free_groups(host=host, host_name=host_name, group_name=group_name):
        taken = take_group(group, holder_id)
        if taken is None:
            return None
        if taken:
            return group
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
    """Free the group if ``holder_id`` still holds it under ``generation``; report whether it did.
    A retired group is disabled instead: the configuration dropped it while it was held."""
    freed = Case(When(retired=True, then=Value(Status.DISABLED)), default=Value(Status.AVAILABLE))
    with transaction.atomic():
        return bool(
            GpuGroup.objects.filter(
                pk=group_id, status=Status.ASSIGNED, holder_id=holder_id, lease_generation=generation
            ).update(status=freed, holder_id=None, assigned_at=None)
        )


def set_enabled(group_id: int, enabled: bool) -> bool:
    """Disable a free group, or enable a disabled one. An assigned group is left alone, and so is a
    retired one (the configuration, not an operator, puts it back)."""
    old, new = (Status.DISABLED, Status.AVAILABLE) if enabled else (Status.AVAILABLE, Status.DISABLED)
    with transaction.atomic():
        return bool(GpuGroup.objects.filter(pk=group_id, status=old, retired=False).update(status=new))


def retire_groups(group_ids: list[int]) -> None:
    """The configuration dropped these groups: never hand them out again, and disable each one now
    if it is free (one conditional UPDATE, so a concurrent ``take_group`` either won before or
    finds it disabled); an assigned one is disabled by its release."""
    disabled_if_free = Case(When(status=Status.AVAILABLE, then=Value(Status.DISABLED)), default=F("status"))
    with transaction.atomic():
        GpuGroup.objects.filter(pk__in=group_ids).update(retired=True, status=disabled_if_free)


def reinstate_group(group_id: int) -> bool:
    """The configuration lists a group it had dropped again: back in service (available once free)."""
    enabled_if_disabled = Case(When(status=Status.DISABLED, then=Value(Status.AVAILABLE)), default=F("status"))
    with transaction.atomic():
        return bool(
            GpuGroup.objects.filter(pk=group_id, retired=True).update(retired=False, status=enabled_if_disabled)
        )


def set_blocked(group_id: int, reason: str) -> bool:
    """Flag (or with ``reason=""`` unflag) a group whose pueue group has work we did not start."""
    with transaction.atomic():
        return bool(
            GpuGroup.objects.filter(pk=group_id).exclude(blocked_reason=reason).update(blocked_reason=reason)
        )


def group_name_for(host: HpcHost, pueue_group: str) -> str:
    """Group names are global; prefix the host's only when another host already uses the name."""
    taken = GpuGroup.objects.filter(name=pueue_group).exclude(host=host).exists()
    return f"{host.name}-{pueue_group}" if taken else pueue_group
