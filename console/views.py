"""The console's pages: a host's remote state, the confirmation of an orphan's kill or adoption,
a case's results, GPU accounting, and the JSON endpoints of the live pages.

Each needs its own permission (``AdminPage``, or checked at the top of the view);
``console.urls`` wraps them in ``admin_view`` (login, no caching), and the GPU accounting pages'
admin entry (``admin.GpuAccountingAdmin``) its own. A case is looked up only among those the user
may see (``cases.access``): another owner's case is a 404, as a missing one.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.text import slugify
from django.views import View

from cases.access import visible_cases
from cases.admin_views import FOLLOWED_LINES, followed_case, follows_logs
from cases.models import Case, CaseStatus
from cases.services import operations
from cases.services.jobs import JOB_LOG
from cases.services.logs import fetch_log_tail
from mqic_site.admin_ui import AdminPage, log_outcome, show
from resources.models import HpcHost
from resources.remote.untar import shown

from . import accounting, live, results
from .models import GpuAccounting
from .remote import remote_state


class RemoteStateView(AdminPage):
    permission = "resources.view_remote_state"
    template_name = "console/remote_state.html"
    opts = HpcHost._meta

    def get_context_data(self, host_id, **kwargs):
        host = get_object_or_404(HpcHost, pk=host_id)
        return super().get_context_data(**kwargs) | {
            "state": remote_state(host),
            "can_manage": self.request.user.has_perm("cases.manage_orphans"),
            "title": f"Remote state of {host.name}",
        }


class OrphanView(AdminPage):
    """Confirm, then kill or adopt one orphan task, named by id and creation time."""

    permission = "cases.manage_orphans"
    template_name = "console/orphan_confirm.html"
    opts = HpcHost._meta
    verbs = {"kill": operations.kill_orphan, "adopt": operations.adopt_orphan}

    def dispatch(self, request, *args, verb, **kwargs):
        if verb not in self.verbs:
            raise Http404(f"no such orphan action: {verb}")
        return super().dispatch(request, *args, verb=verb, **kwargs)

    def get_context_data(self, host_id, task_id, verb, **kwargs):
        host = get_object_or_404(HpcHost, pk=host_id)
        created_at = self.request.GET.get("created_at", "")
        found = operations.look_at_orphan(host, task_id, created_at)
        return super().get_context_data(**kwargs) | {
            "host": host,
            "task_id": task_id,
            "verb": verb,
            "created_at": created_at,
            "orphan": found if isinstance(found, operations.OrphanView) else None,
            "problem": found.message if isinstance(found, operations.Outcome) else "",
            "title": f"{verb.capitalize()} orphan task {task_id} on {host.name}",
        }

    def post(self, request, host_id, task_id, verb):
        host = get_object_or_404(HpcHost, pk=host_id)
        outcome = self.verbs[verb](host, task_id, request.POST.get("created_at", ""), request.user)
        log_outcome(request, host, outcome)
        show(request, [outcome])
        return redirect("console:remote_state", host_id=host.pk)


# -- live pages: small JSON endpoints the pages poll (``static/console/live.js``) --------------


class LiveEndpoint(View):
    """``{"fragments": {key: html}, "stop": bool, "at": iso}`` for users holding ``permission``."""

    permission = "cases.view_case"

    def dispatch(self, request, *args, **kwargs):
        if not self.allowed(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def allowed(self, user) -> bool:
        return user.has_perm(self.permission)

    def answer(self, fragments: dict[str, str], stop: bool = False) -> JsonResponse:
        return JsonResponse({"fragments": fragments, "stop": stop, "at": timezone.now().isoformat()})


class LiveOverview(LiveEndpoint):
    def get(self, request):
        return self.answer(live.dashboard(request))


class LiveCases(LiveEndpoint):
    def get(self, request):
        ids = [int(i) for i in request.GET.get("ids", "").split(",") if i.isdigit()]
        return self.answer(live.case_cells(request.user, ids))


class LiveCase(LiveEndpoint):
    def get(self, request, pk):
        case = get_object_or_404(visible_cases(request.user).select_related("gpu_group__host"), pk=pk)
        return self.answer(live.case_page(request, case))


class LiveLog(LiveEndpoint):
    """The followed log's tail; ``stop`` once the case no longer runs (its job log is then home)."""

    def allowed(self, user) -> bool:
        return follows_logs(user)

    def get(self, request, pk):
        case = followed_case(request.user, pk)
        tail = fetch_log_tail(case, lines=FOLLOWED_LINES)
        error = format_html('<p class="errornote">{}</p>', tail.error) if tail.error else ""
        fragments = {"log-error": error} | (
            {"log-tail": escape(tail.text or "(no output yet)")} if tail.text else {}
        )
        return self.answer(fragments, stop=case.status != CaseStatus.RUNNING)


# -- a case's results: listed, each file, the job log, the whole folder -------------------------


class ResultsView(AdminPage):
    permission = "console.view_results"
    template_name = "console/results.html"
    opts = Case._meta

    def get_context_data(self, pk, **kwargs):
        case = get_object_or_404(visible_cases(self.request.user), pk=pk)
        found = results.listing(case)
        return super().get_context_data(**kwargs) | {
            "case": case,
            "listing": found,
            "job_log": JOB_LOG,
            "listed_max": results.LISTED_MAX,
            "title": f"Results of {case.name}",
        }


class ResultFile(View):
    """One regular file of the results, as an attachment (never rendered on the console's origin:
    a job may have written HTML); the job log is shown as plain text."""

    def get(self, request, pk, path=None, token=None):
        """By its path, or by ``token`` (its bytes, for a name that is not text: see ``Entry``)."""
        if not request.user.has_perm("console.view_results"):
            raise PermissionDenied
        case = get_object_or_404(visible_cases(request.user), pk=pk)
        try:
            path = results.path_of(token) if token is not None else path
            file = results.open_file(case, path)
        except results.NotServed as problem:
            raise Http404(str(problem)) from problem
        name = shown(path.rpartition("/")[2], limit=255)
        if path == JOB_LOG and request.GET.get("download") is None:
            return FileResponse(file, content_type="text/plain; charset=utf-8", filename=name)
        return FileResponse(file, as_attachment=True, filename=name, content_type="application/octet-stream")


class ResultArchive(View):
    def get(self, request, pk):
        if not request.user.has_perm("console.view_results"):
            raise PermissionDenied
        case = get_object_or_404(visible_cases(request.user), pk=pk)
        if not results.has_folder(case):
            raise Http404("this case has no results folder")
        top = f"case-{case.pk}-{slugify(case.name)[:80] or 'results'}"
        response = StreamingHttpResponse(results.tar_stream(case, top), content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{top}.tar.gz"'
        return response


# -- GPU accounting: GPU time per owner, host and month, and the same as CSV ------------------

ACCOUNTING_PERMISSION = "cases.view_case"
"""Who may open the page: staff who see cases (the scientists group too); which lines each sees is
``cases.access``'s rule (``accounting.report``)."""


class GpuAccountingView(AdminPage):
    permission = ACCOUNTING_PERMISSION
    template_name = "console/gpu_accounting.html"
    title = "GPU accounting"
    opts = GpuAccounting._meta

    def get_context_data(self, **kwargs):
        months = accounting.months_asked(self.request.GET)
        return super().get_context_data(**kwargs) | {
            "report": accounting.report(self.request.user, months),
            "months": months,
            "time_zone": settings.TIME_ZONE,
        }


class GpuAccountingCsv(AdminPage):
    """The page's lines as a CSV download (the same months, the same rule of who sees which)."""

    permission = ACCOUNTING_PERMISSION

    def get(self, request):
        months = accounting.months_asked(request.GET)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{accounting.csv_name(months)}"'
        accounting.write_csv(accounting.report(request.user, months), response)
        return response
