"""Small pieces the admin of both apps shares: badges, outcome messages, confirmation pages.

The apps' admins stay thin: they ask a service, then show its ``Outcome`` with ``show``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import messages
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from resources.operations import Outcome

# More messages than this after a bulk action are summed up instead of listed.
MESSAGES_LISTED = 10


def badge(text: str, colour: str, title: str = ""):
    return format_html('<span class="mqic-badge" style="background:{}" title="{}">{}</span>', colour, title, text)


def show(request, outcomes: Iterable[Outcome]) -> None:
    """One message per outcome; for a long bulk action the first few and a count per level."""
    outcomes = list(outcomes)
    for outcome in outcomes[:MESSAGES_LISTED]:
        messages.add_message(request, getattr(messages, outcome.level.upper()), outcome.message)
    rest = outcomes[MESSAGES_LISTED:]
    if rest:
        changed = sum(o.changed for o in rest)
        messages.info(request, f"and {len(rest)} more: {changed} changed, {len(rest) - changed} left as they were")


def confirmation(request, model_admin, *, action: str, title: str, warning: str, rows) -> TemplateResponse:
    """The page between choosing an action and running it; posts back with ``confirmed=yes``.

    ``rows`` are (object, note) pairs: the note says what will happen to that object.
    """
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "warning": warning,
        "rows": rows,
        "action": action,
        "opts": model_admin.model._meta,
        "next": safe_next(request),
    }
    return TemplateResponse(request, "admin/mqic/confirm_action.html", context)


def confirmed(request) -> bool:
    return request.POST.get("confirmed") == "yes"


def safe_next(request) -> str:
    """The page to go back to after an action started elsewhere (the case page), if it is ours."""
    target = request.POST.get("next", "")
    ok = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
    return target if ok else ""
