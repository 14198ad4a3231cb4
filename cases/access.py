"""Who may see a case: the one rule behind every list, count, page, log, result file and action.

Operators (superusers, or whoever holds ``cases.view_all_cases``) see every case. Anyone else sees
the cases they own and nothing more: a case without an owner is the operators'. Views and the
admin ask here; none of them decides it again.
"""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Case

SEE_ALL = "cases.view_all_cases"


def sees_all(user) -> bool:
    """An operator: superusers hold every permission while active, the others need ``SEE_ALL``."""
    return user.has_perm(SEE_ALL)


def visible_cases(user, cases: QuerySet[Case] | None = None) -> QuerySet[Case]:
    """``cases`` (every case by default) narrowed to what ``user`` may see."""
    return visible_owned(user, Case.objects.all() if cases is None else cases)


def visible_owned(user, rows: QuerySet, owner: str = "owner") -> QuerySet:
    """Rows of anything that belongs to a case owner (named by the field ``owner``: cases, the GPU
    time they used) narrowed by the same rule: all of them for an operator, else the user's own."""
    if sees_all(user):
        return rows
    if not user.is_active or not user.is_authenticated:
        return rows.none()
    return rows.filter(**{owner: user})


def may_see(user, case: Case) -> bool:
    if sees_all(user):
        return True
    return user.is_active and user.is_authenticated and case.owner_id is not None and case.owner_id == user.pk
