"""The custom pages of the case admin: reconcile now, and a running case's log as it grows.

Each page needs its own permission (``AdminPage``); ``CaseAdmin.get_urls`` wraps them in
``admin_view``. Pages that change something show on GET and act on POST, through a service.
A page about one case shows it only to whom may see it (``access``): 404 for anyone else.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect

from mqic_site.admin_ui import AdminPage, log_outcome, show

from . import access
from .models import Case, CaseStatus
from .services import operations
from .services.logs import fetch_log_tail

FOLLOWED_LINES = 200
"""The log page shows this many last lines of the task's output, asked again every few seconds."""

FOLLOW_LOG = ("resources.view_remote_state", "console.view_results")
"""Either lets a user follow the log of a case they may see: operators follow any (they read the
hosts' live state), and whoever reads a case's results reads its output as it is written."""


def follows_logs(user) -> bool:
    return any(user.has_perm(name) for name in FOLLOW_LOG)


def may_follow_log(user, case: Case) -> bool:
    """Whether ``user`` may follow ``case``'s log (the page, its live endpoint, the button)."""
    return follows_logs(user) and access.may_see(user, case)


def followed_case(user, pk: int) -> Case:
    """The case whose log ``user`` follows: 403 without a permission of ``FOLLOW_LOG``, 404 when it
    is no case they may see."""
    if not follows_logs(user):
        raise PermissionDenied
    return get_object_or_404(access.visible_cases(user).select_related("gpu_group__host"), pk=pk)


class ReconcileView(AdminPage):
    permission = "cases.reconcile_case"
    template_name = "admin/cases/case/reconcile.html"
    title = "Reconcile now"
    opts = Case._meta

    def post(self, request):
        run, outcome = operations.reconcile_now(request.user)
        log_outcome(request, run, outcome)
        show(request, [outcome])
        return redirect("admin:cases_case_changelist")


class LogTailView(AdminPage):
    """The tail of a running case's output from pueue; it follows while the case runs (the live
    endpoint ``console:live_log`` asks again). The whole job log is on the results page."""

    template_name = "admin/cases/case/log_tail.html"
    opts = Case._meta

    def allowed(self, user) -> bool:
        return follows_logs(user)

    def get_context_data(self, pk, **kwargs):
        case = followed_case(self.request.user, pk)
        return super().get_context_data(**kwargs) | {
            "case": case,
            "tail": fetch_log_tail(case, lines=FOLLOWED_LINES),
            "lines": FOLLOWED_LINES,
            "follows": case.status == CaseStatus.RUNNING,
            "live_seconds": settings.MQIC_LIVE_SECONDS,
            "title": f"Log of {case.name}",
        }
