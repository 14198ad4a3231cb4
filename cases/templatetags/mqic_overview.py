"""The operations overview on the admin index (``{% mqic_overview %}`` in admin/index.html)."""

from django import template
from django.urls import NoReverseMatch, reverse

from ..admin import STATUS_COLOURS
from ..selectors import overview

register = template.Library()

# django-q2's own pages, listed when registered (the queue page only with the ORM broker).
QUEUE_PAGES = [
    ("Scheduled tasks", "admin:django_q_schedule_changelist"),
    ("Successful tasks", "admin:django_q_success_changelist"),
    ("Failed tasks", "admin:django_q_failure_changelist"),
    ("Queued tasks", "admin:django_q_ormq_changelist"),
]


@register.inclusion_tag("admin/mqic/overview.html", takes_context=True)
def mqic_overview(context):
    if not context["request"].user.has_perm("cases.view_case"):
        return {"shown": False}
    data = overview()
    return {
        "shown": True,
        "o": data,
        "statuses": [(status, count, STATUS_COLOURS[status]) for status, count in data.per_status],
        "queue_pages": _queue_pages(),
        "perms": context["perms"],
    }


def _queue_pages() -> list[tuple[str, str]]:
    pages = []
    for title, name in QUEUE_PAGES:
        try:
            pages.append((title, reverse(name)))
        except NoReverseMatch:
            continue
    return pages
