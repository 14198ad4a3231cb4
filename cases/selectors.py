"""Reads of the case tables that pages and passes share; no remote calls, no writes."""

from __future__ import annotations

from django.db.models import Case as DbCase
from django.db.models import Count, DurationField, F, IntegerField, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from .models import FINISHED, HOLDS_GPU, Case, CaseStatus


def stuck_cases():
    """Cases whose submitting or finishing worker's lease ran out: the reconciler's, or a human's."""
    return Case.objects.filter(status__in=HOLDS_GPU, lease_expires_at__lt=timezone.now())


def troubled_cases():
    """Cases not finished whose handling raised unexpected errors (see ``services.isolation``)."""
    return Case.objects.exclude(status__in=FINISHED).filter(error_count__gt=0)


def with_timing(queryset):
    """The case rows with ``run_time`` (running so far, or start to end) and ``wait_position`` (the
    place of a waiting case in the queue for a GPU group: submission takes the oldest first), in the
    same query: the case list shows and sorts both without a query per row."""
    ahead = (
        Case.objects.filter(status=CaseStatus.SUBMITTED)
        .filter(
            Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), pk__lt=OuterRef("pk"))
        )
        .order_by()
        .values("status")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.annotate(
        run_time=DbCase(
            When(status=CaseStatus.RUNNING, running_at__isnull=False, then=Now() - F("running_at")),
            When(
                status__in=FINISHED,
                running_at__isnull=False,
                finished_at__gte=F("running_at"),
                then=F("finished_at") - F("running_at"),
            ),
            output_field=DurationField(),
        ),
        wait_position=DbCase(
            When(status=CaseStatus.SUBMITTED, then=Coalesce(Subquery(ahead), 0) + 1),
            output_field=IntegerField(),
        ),
    )
