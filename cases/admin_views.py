"""The custom pages of the case admin: reconcile now, a case's log tail, a host's remote state
and the confirmation pages for orphan tasks.

Each page needs its own permission (403 without it); ``CaseAdmin.get_urls`` wraps them in
``admin_view``, which sends anonymous users to the login page. Pages that change something
show on GET and act on POST, through a service, so a link can never kill a task.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.views.generic import TemplateView

from mqic_site.admin_ui import show
from resources.models import HpcHost

from .models import Case
from .selectors import fetch_log_tail, remote_state
from .services import operations


class AdminPage(TemplateView):
    """A page inside the case admin, for users holding ``permission``."""

    model_admin = None
    permission = ""
    title = ""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm(self.permission):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return {
            **self.model_admin.admin_site.each_context(self.request),
            "opts": Case._meta,
            "title": self.title,
            **super().get_context_data(**kwargs),
        }


class ReconcileView(AdminPage):
    permission = "cases.reconcile_case"
    template_name = "admin/cases/case/reconcile.html"
    title = "Reconcile now"

    def post(self, request):
        show(request, [operations.reconcile_now(request.user)])
        return redirect("admin:cases_case_changelist")


class LogTailView(AdminPage):
    permission = "resources.view_remote_state"
    template_name = "admin/cases/case/log_tail.html"

    def get_context_data(self, pk, **kwargs):
        case = get_object_or_404(Case.objects.select_related("gpu_group__host"), pk=pk)
        return super().get_context_data(**kwargs) | {
            "case": case,
            "tail": fetch_log_tail(case),
            "title": f"Log tail of {case.name}",
        }


class RemoteStateView(AdminPage):
    permission = "resources.view_remote_state"
    template_name = "admin/cases/case/remote_state.html"

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
    template_name = "admin/cases/case/orphan_confirm.html"
    verbs = {"kill": operations.kill_orphan, "adopt": operations.adopt_orphan}

    def dispatch(self, request, *args, verb, **kwargs):
        if verb not in self.verbs:
            raise Http404(f"no such orphan action: {verb}")
        return super().dispatch(request, *args, verb=verb, **kwargs)

    def get_context_data(self, host_id, task_id, verb, **kwargs):
        host = get_object_or_404(HpcHost, pk=host_id)
        return super().get_context_data(**kwargs) | {
            "host": host,
            "task_id": task_id,
            "verb": verb,
            "created_at": self.request.GET.get("created_at", ""),
            "label": self.request.GET.get("label", ""),
            "title": f"{verb.capitalize()} orphan task {task_id} on {host.name}",
        }

    def post(self, request, host_id, task_id, verb):
        host = get_object_or_404(HpcHost, pk=host_id)
        show(request, [self.verbs[verb](host, task_id, request.POST.get("created_at", ""), request.user)])
        return redirect("admin:cases_case_remote_state", host_id=host.pk)
