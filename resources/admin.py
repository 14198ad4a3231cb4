"""Hosts and GPU groups in the admin: their health, the host key, and the operator actions.

Every action calls ``resources.operations`` and shows its ``Outcome``. Links to case pages
(the holder of a group, a host's remote state) are made by URL name only: ``resources``
never imports ``cases``.
"""

from django.contrib import admin
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from mqic_site.admin_ui import badge, confirmation, confirmed, show

from . import operations
from .admin_views import TrustKeyView
from .models import GpuGroup, HpcHost

GROUP_COLOURS = {"available": "#2f9e44", "assigned": "#1971c2", "disabled": "#868e96"}


def link(url_name: str, text: str, *args):
    """A link to another app's admin page, or the plain text when that page does not exist."""
    try:
        return format_html('<a href="{}">{}</a>', reverse(url_name, args=args), text)
    except NoReverseMatch:
        return text


@admin.register(HpcHost)
class HpcHostAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "enabled", "health", "pueue_version", "key_fingerprint", "pages")
    readonly_fields = ("host_key", "key_fingerprint", "last_contact_at", "last_error", "pueue_version")
    actions = ["check_health", "sync_gpu_groups"]

    @admin.display(description="address")
    def address(self, host):
        return f"{host.username + '@' if host.username else ''}{host.hostname}:{host.port}"

    @admin.display(description="health")
    def health(self, host):
        """The last error (it carries its own time) and the last successful contact."""
        contact = (
            f"last contact {host.last_contact_at:%Y-%m-%d %H:%M:%S}" if host.last_contact_at else "never reached"
        )
        if host.last_error:
            return format_html("{} {} ({})", badge("error", "#e03131"), host.last_error[:160], contact)
        return format_html("{} {}", badge("ok", "#2f9e44"), contact) if host.last_contact_at else contact

    @admin.display(description="trusted host key")
    def key_fingerprint(self, host):
        trusted = operations.trusted_fingerprint(host)
        if trusted:
            return trusted
        return "none stored (the known_hosts file decides)" if host.known_hosts_path else "none trusted"

    @admin.display(description="")
    def pages(self, host):
        return format_html(
            "{} · {}",
            link("admin:cases_case_remote_state", "remote state", host.pk),
            link("admin:resources_hpchost_trust", "host key", host.pk),
        )

    @admin.action(description="Check health now (pueue version over SSH)", permissions=["view_remote_state"])
    def check_health(self, request, queryset):
        show(request, (operations.check_health(host) for host in queryset))

    @admin.action(description="Sync GPU groups from the hosts' pueue groups", permissions=["sync_gpugroups"])
    def sync_gpu_groups(self, request, queryset):
        show(request, (operations.sync_groups(host) for host in queryset))

    def has_view_remote_state_permission(self, request):
        return request.user.has_perm("resources.view_remote_state")

    def has_sync_gpugroups_permission(self, request):
        return request.user.has_perm("resources.sync_gpugroups")

    def get_urls(self):
        trust = self.admin_site.admin_view(TrustKeyView.as_view(model_admin=self))
        return [path("<int:pk>/trust/", trust, name="resources_hpchost_trust"), *super().get_urls()]


@admin.register(GpuGroup)
class GpuGroupAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "host",
        "pueue_group",
        "devices",
        "status_display",
        "blocked_reason",
        "holder",
        "since",
        "lease_generation",
    )
    list_filter = ("status", "host")
    list_select_related = ("host",)
    readonly_fields = ("status", "holder", "lease_generation", "assigned_at", "blocked_reason")
    actions = ["enable_groups", "disable_groups", "release_groups", "sync_hosts"]

    @admin.display(description="status", ordering="status")
    def status_display(self, group):
        return badge(group.status, GROUP_COLOURS.get(group.status, "#868e96"))

    @admin.display(description="held since", ordering="assigned_at")
    def since(self, group):
        return group.assigned_at or "-"

    @admin.display(description="held by")
    def holder(self, group):
        if group.holder_id is None:
            return "-"
        return link("admin:cases_case_change", f"case {group.holder_id}", group.holder_id)

    def get_readonly_fields(self, request, obj=None):
        """Host and pueue group are fixed once the row exists: a lease names the group."""
        fixed = ("host", "pueue_group") if obj is not None else ()
        return (*self.readonly_fields, *fixed)

    @admin.action(description="Enable the selected GPU groups", permissions=["enable"])
    def enable_groups(self, request, queryset):
        show(request, (operations.set_group_enabled(group, True) for group in queryset))

    @admin.action(description="Disable the selected GPU groups (free ones only)", permissions=["enable"])
    def disable_groups(self, request, queryset):
        show(request, (operations.set_group_enabled(group, False) for group in queryset))

    @admin.action(
        description="Release the selected GPU groups (if nothing runs in them)…", permissions=["release"]
    )
    def release_groups(self, request, queryset):
        if not confirmed(request):
            rows = [(group, f"{group.status}, held by case {group.holder_id or '-'}") for group in queryset]
            warning = (
                "Each assigned group is released if its pueue group runs no live task (asked from the host "
                "now). The case holding it is not changed: mark it failed or cancel it if it is stuck."
            )
            return confirmation(
                request, self, action="release_groups", title="Release GPU groups", warning=warning, rows=rows
            )
        show(request, (operations.release_idle_group(group) for group in queryset.select_related("host")))
        return None

    @admin.action(description="Sync GPU groups from the hosts of the selected groups", permissions=["sync"])
    def sync_hosts(self, request, queryset):
        hosts = HpcHost.objects.filter(pk__in=queryset.values("host"))
        show(request, (operations.sync_groups(host) for host in hosts))

    def has_enable_permission(self, request):
        return request.user.has_perm("resources.enable_gpugroup")

    def has_release_permission(self, request):
        return request.user.has_perm("resources.release_gpugroup")

    def has_sync_permission(self, request):
        return request.user.has_perm("resources.sync_gpugroups")
