"""Reads of the case tables that pages and passes share; no remote calls, no writes."""

from __future__ import annotations

from django.db.models import Case as DbCase
from django.db.models import DurationField, F, When
from django.db.models.functions import Now
from django.utils import timezone

from .models import FINISHED, HOLDS_GPU, Case, CaseStatus


def stuck_cases():
    """Cases whose submitting or finishing worker's lease ran out: the reconciler's, or a human's."""
    return Case.objects.filter(status__in=HOLDS_GPU, lease_expires_at__lt=timezone.now())


def troubled_cases():
    """Cases not finished whose handling raised unexpected errors (see ``services.isolation``)."""
    return Case.objects.exclude(status__in=FINISHED).filter(error_count__gt=0)


def with_timing(queryset):
    """The case rows with ``run_time`` (running so far, or start to end), in the same query: the case
    list shows and sorts it without a query per row. (A waiting case's place is ``queueing``'s.)"""
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
    )
