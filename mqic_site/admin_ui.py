"""Small pieces every app's admin pages share: badges, outcome messages and their "Recent
actions" entries, confirmation pages, and the base of a custom page behind a permission.

The apps' admins stay thin: they ask a service, then show its outcome with ``show``. This
module belongs to the project package and imports no app: apps import it from above.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.generic import TemplateView


class Outcome(Protocol):
    """What an operator action did (``resources.operations.Outcome`` is one)."""

    changed: bool
    message: str
    level: str


# More messages than this after a bulk action are summed up instead of listed.
MESSAGES_LISTED = 10


def link(url_name: str, text: str, *args):
    """A link to another app's page, or the plain text when that app is not installed: an app
    may point at a page of an app above it, but never needs it."""
    try:
        return format_html('<a href="{}">{}</a>', reverse(url_name, args=args), text)
    except NoReverseMatch:
        return text


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


def log_outcome(request, obj, outcome: Outcome) -> None:
    """An action that changed something goes to the admin's "Recent actions" too (a ``LogEntry`` on
    ``obj``), beside the case event or host record the service wrote."""
    if outcome.changed:
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=[obj],
            action_flag=CHANGE,
            change_message=outcome.message[:2000],
            single_object=True,
        )


def confirmation(
    request, model_admin, *, action: str, title: str, warning: str, rows, ask_why: bool = False
) -> TemplateResponse:
    """The page between choosing an action and running it; posts back with ``confirmed=yes``.

    ``rows`` are (object, note) pairs: the note says what will happen to that object. With
    ``ask_why`` the operator may say why (``given_why``).
    """
    context = {
        "ask_why": ask_why,
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


def given_why(request) -> str:
    """What the operator typed as the reason of an action: one paragraph, at most 1000 characters."""
    text = " ".join(request.POST.get("why", "").split())
    return "".join(c for c in text if c.isprintable())[:1000]


def safe_next(request) -> str:
    """The page to go back to after an action started elsewhere (the case page), if it is ours."""
    target = request.POST.get("next", "")
    ok = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()})
    return target if ok else ""


class AdminPage(TemplateView):
    """A custom page inside the admin, for users holding ``permission`` (403 without it).

    Wrap it in ``admin.site.admin_view`` so anonymous users are sent to the login page.
    Pages that change something show on GET and act on POST, so a link can never act.
    """

    permission = ""
    title = ""
    opts = None
    """The model whose breadcrumbs and styles the page takes (``Model._meta``), if any."""

    def dispatch(self, request, *args, **kwargs):
        if not self.allowed(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def allowed(self, user) -> bool:
        """Whether ``user`` may open the page at all (a page may ask more of the object it shows)."""
        return user.has_perm(self.permission)

    def get_context_data(self, **kwargs):
        return {
            **admin.site.each_context(self.request),
            "opts": self.opts,
            "title": self.title,
            **super().get_context_data(**kwargs),
        }
