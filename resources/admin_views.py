"""The host key page: what the host offers now against what is trusted, and the trust button.

A mismatch is shown as an alarm with both fingerprints and is only replaced when the operator
types "replace": it may be a man in the middle. A local host has no key to show.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect

from mqic_site.admin_ui import AdminPage, log_outcome, show

from . import operations
from .models import HpcHost
from .remote.errors import RemoteError

REPLACE_WORD = "replace"


class TrustKeyView(AdminPage):
    permission = "resources.trust_host_key"
    template_name = "admin/resources/hpchost/trust_key.html"
    opts = HpcHost._meta

    def get_context_data(self, pk, **kwargs):
        host = get_object_or_404(HpcHost, pk=pk)
        check, error = None, ""
        if not host.is_local:
            try:
                check = operations.check_host_key(host)
            except RemoteError as failure:
                error = str(failure)
        return super().get_context_data(**kwargs) | {
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
        log_outcome(request, host, outcome)
        show(request, [outcome])
        if outcome.changed:
            return redirect("admin:resources_hpchost_change", host.pk)
        return redirect("admin:resources_hpchost_trust", host.pk)
