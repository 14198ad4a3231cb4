"""The host key page: what the host offers now against what is trusted, and the trust button.

A mismatch is shown as an alarm with both fingerprints and is only replaced when the operator
types "replace": it may be a man in the middle. A local host has no key to show.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from mqic_site.admin_ui import AdminPage, log_outcome, show

from . import hostkeys, operations
from .models import HpcHost
from .remote.errors import RemoteError

REPLACE_WORD = "replace"


class TrustKeyView(AdminPage):
    permission = "resources.trust_host_key"
    template_name = "admin/resources/hpchost/trust_key.html"
    opts = HpcHost._meta

    def get_context_data(self, pk, **kwargs):
        host = get_object_or_404(HpcHost, pk=pk)
        hop = chosen_hop(host, self.request.GET.get("hop"))
        check, error = None, ""
        if not host.is_local:
            try:
                check = operations.check_host_key(host, hop)
            except RemoteError as failure:
                error = str(failure)
        seen = operations.on_route(host, hop)
        return super().get_context_data(**kwargs) | {
            "title": f"Host key of {seen.name}",
            "host": host,
            "seen": seen,
            "hop": hop,
            "route": [(n, jump.name) for n, jump in enumerate(hostkeys.jump_hosts(host))],
            "check": check,
            "error": error,
            "replace_word": REPLACE_WORD,
        }

    def post(self, request, pk):
        host = get_object_or_404(HpcHost, pk=pk)
        hop = chosen_hop(host, request.POST.get("hop"))
        replace = request.POST.get("replace", "").strip() == REPLACE_WORD
        outcome = operations.trust_host_key(host, request.POST.get("fingerprint", ""), replace=replace, hop=hop)
        log_outcome(request, host, outcome)
        show(request, [outcome])
        if outcome.changed and hop is None:
            return redirect("admin:resources_hpchost_change", host.pk)
        return redirect(
            reverse("admin:resources_hpchost_trust", args=[host.pk]) + (f"?hop={hop}" if hop is not None else "")
        )


def chosen_hop(host: HpcHost, given: str | None) -> int | None:
    """The jump host a request names (``hop``, from 0), or None for the host itself (also when the
    number names no jump host of this host)."""
    if given is None or not given.isdigit():
        return None
    hop = int(given)
    return hop if hop < len(hostkeys.jump_hosts(host)) else None
