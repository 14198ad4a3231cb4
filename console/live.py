"""The pieces of the live pages, rendered again for their JSON endpoints.

A live page marks what may change with ``data-live="<key>"``; its script (static
``console/live.js``) asks the page's endpoint every few seconds and swaps each returned key's
HTML in place, so the operator keeps their scroll, selection and open details. Every piece is
rendered by the same code as the page itself: the case admin's cells, the case page's includes,
the dashboard's template.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.context_processors import PermWrapper
from django.template.loader import render_to_string
from django.utils.html import conditional_escape

from cases.access import visible_cases
from cases.admin import LIVE_CELLS, live_key
from cases.models import Case
from cases.selectors import with_timing
from cases.services import queueing

from .selectors import overview
from .templatetags.console_overview import overview_context

MAX_ROWS = 500
"""A list page shows at most a few hundred rows; more ids than this are refused."""


def case_cells(user, ids: list[int]) -> dict[str, str]:
    """The live cells of these cases (a list page's rows) that ``user`` may see, in one query and a
    fixed few more for the places of the waiting ones (``queueing``): an id of another owner's case
    is left out, as one that does not exist."""
    cases = list(
        with_timing(visible_cases(user).select_related("gpu_group__host", "owner")).filter(pk__in=ids[:MAX_ROWS])
    )
    queueing.place(cases)
    # Escaped here, whatever a cell returns: a fragment is put into the page as HTML.
    return {
        live_key(case, cell): str(conditional_escape(render(case)))
        for case in cases
        for cell, render in LIVE_CELLS.items()
    }


def case_page(request, case: Case) -> dict[str, str]:
    """A case page's live parts: its cells, the buttons that apply now, its attempts and timeline."""
    case_admin = admin.site.get_model_admin(Case)
    context = case_admin.live_context(request, case) | {"original": case, "perms": PermWrapper(request.user)}
    fragments = case_cells(request.user, [case.pk])
    for part in ("ops", "attempts", "timeline"):
        fragments[f"case-{case.pk}-{part}"] = render_to_string(
            f"admin/cases/case/_{part}.html", context, request=request
        )
    return fragments


def dashboard(request) -> dict[str, str]:
    context = overview_context(request, overview(request.user))
    return {"overview": render_to_string("console/_overview_body.html", context, request=request)}
