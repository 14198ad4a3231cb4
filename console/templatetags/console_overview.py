"""The dashboard on the admin index (``{% mqic_overview %}`` in admin/index.html)."""

from django import template
from django.conf import settings
from django.contrib.auth.context_processors import PermWrapper
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from cases.admin import STATUS_COLOURS, human_duration

from ..selectors import Overview, overview

register = template.Library()

# django-q2's own pages, listed when registered (the queue page only with the ORM broker).
QUEUE_PAGES = [
    ("Scheduled tasks", "admin:django_q_schedule_changelist"),
    ("Successful tasks", "admin:django_q_success_changelist"),
    ("Failed tasks", "admin:django_q_failure_changelist"),
    ("Queued tasks", "admin:django_q_ormq_changelist"),
]


@register.inclusion_tag("console/overview.html", takes_context=True)
def mqic_overview(context):
    request = context["request"]
    if not request.user.has_perm("cases.view_case"):
        return {"shown": False}
    return overview_context(request, overview(request.user)) | {
        "shown": True,
        "live_seconds": settings.MQIC_LIVE_SECONDS,
    }


@register.filter
def ago(moment) -> str:
    """``12s ago``, ``3m 04s ago``: to the second, as everywhere in the console."""
    return f"{human_duration(timezone.now() - moment)} ago" if moment else "never"


def overview_context(request, data: Overview) -> dict:
    """What the dashboard's body shows (the page, and the live endpoint that renders it again)."""
    return {
        "o": data,
        "statuses": [(status, count, STATUS_COLOURS[status]) for status, count in data.per_status],
        "queue_pages": _queue_pages(),
        "perms": PermWrapper(request.user),
        "request": request,
    }


def _queue_pages() -> list[tuple[str, str]]:
    pages = []
    for title, name in QUEUE_PAGES:
        try:
            pages.append((title, reverse(name)))
        except NoReverseMatch:
            continue
    return pages
