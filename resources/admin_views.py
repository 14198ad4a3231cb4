"""The host key page: what the host offers now against what is trusted, and the trust button.

A changed key is shown as an alarm and is only replaced when the operator types
"replace": it may be a man in the middle.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.views.generic import TemplateView

from mqic_site.admin_ui import show

from . import operations
from .models import HpcHost
from .remote.errors import RemoteError

REPLACE_WORD = "replace"


class TrustKeyView(TemplateView):
    model_admin = None
    template_name = "admin/resources/hpchost/trust_key.html"

    def dispatch(self, request, *args, **kwargs):
        if not request.user.has_perm("resources.trust_host_key"):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, pk, **kwargs):
        host = get_object_or_404(HpcHost, pk=pk)
        try:
            check, error = operations.check_host_key(host), ""
        except RemoteError as failure:
            check, error = None, str(failure)
        return {
            **self.model_admin.admin_site.each_context(self.request),
            **super().get_context_data(**kwargs),
            "opts": HpcHost._meta,
            "title": f"Host key of {host.name}",
            "host": host,
            "check": check,
            "error": error,
            "replace_word": REPLACE_WORD,
        }

    def post(self, request, pk):
        host = get_object_or_404(HpcHost, pk=pk)
        replace = request.POST.get("replace", "").strip() == REPLACE_WORD
        outcome = operations.trust_host_key(host, request.POST.get("fingerprint", ""), replace=replace)
        show(request, [outcome])
        if outcome.changed:
            return redirect("admin:resources_hpchost_change", host.pk)
        return redirect("admin:resources_hpchost_trust", host.pk)
