"""The custom pages of the case admin: reconcile now, and a running case's log as it grows.

Each page needs its own permission (``AdminPage``); ``CaseAdmin.get_urls`` wraps them in
``admin_view``. Pages that change something show on GET and act on POST, through a service.
"""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404, redirect

from mqic_site.admin_ui import AdminPage, log_outcome, show

from .models import Case, CaseStatus
from .services import operations
from .services.logs import fetch_log_tail

FOLLOWED_LINES = 200
"""The log page shows this many last lines of the task's output, asked again every few seconds."""


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

    permission = "resources.view_remote_state"
    template_name = "admin/cases/case/log_tail.html"
    opts = Case._meta

    def get_context_data(self, pk, **kwargs):
        case = get_object_or_404(Case.objects.select_related("gpu_group__host"), pk=pk)
        return super().get_context_data(**kwargs) | {
            "case": case,
            "tail": fetch_log_tail(case, lines=FOLLOWED_LINES),
            "lines": FOLLOWED_LINES,
            "follows": case.status == CaseStatus.RUNNING,
            "live_seconds": settings.MQIC_LIVE_SECONDS,
            "title": f"Log of {case.name}",
        }
