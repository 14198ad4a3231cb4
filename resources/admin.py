"""Hosts and GPU groups in the admin: their health, the host key, and the operator actions.

Every action calls ``resources.operations``, shows its ``Outcome`` and logs it in "Recent
actions". Links to case pages (the holder of a group, a host's remote state) are made by URL
name only: ``resources`` never imports ``cases``. Nothing here can break the invariants: a
group's status and holder are never edited, a group or host that cases ran on is never deleted.
"""

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from mqic_site.admin_ui import badge, confirmation, confirmed, link, log_outcome, safe_next, show

from . import hostkeys, operations
from .admin_views import TrustKeyView
from .models import GpuGroup, HpcHost

GROUP_COLOURS = {"available": "#2f9e44", "assigned": "#1971c2", "disabled": "#868e96"}


# How a host is reached: whoever may change these runs commands as the HPC account (or reads
# files of this machine as keys), so only superusers may.
CONNECTION_FIELDS = (
    "hostname",
    "port",
    "username",
    "key_path",
    "known_hosts_path",
    "proxy_jump",
    "base_dir",
    "pueue_command",
)


def run_each(request, objects, operation) -> None:
    """Run ``operation`` on each object; show and log what each did."""
    outcomes = []
    for obj in objects:
        outcome = operation(obj)
        log_outcome(request, obj, outcome)
        outcomes.append(outcome)
    show(request, outcomes)


def cases_on(host: HpcHost) -> int:
    """How many cases ran (or run) on the host's GPU groups, through the reverse relations only."""
    groups = host.gpu_groups.all()
    return groups.filter(cases__isnull=False).values("cases").distinct().count()


@admin.register(HpcHost)
class HpcHostAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "enabled", "users", "health", "pueue_version", "key_fingerprint", "pages")
    change_form_template = "admin/resources/hpchost/change_form.html"
    exclude = ("allowed_groups",)
    readonly_fields = (
        "transport",
        "users",
        "host_key",
        "key_fingerprint",
        "last_contact_at",
        "last_error",
        "consecutive_failures",
        "down_since",
        "next_try_at",
        "pueue_version",
    )

    def get_readonly_fields(self, request, obj=None):
        """The transport is the deployment's choice (configure_hpc); connection fields are superusers'."""
        fixed = self.readonly_fields
        return fixed if request.user.is_superuser else (*fixed, "name", *CONNECTION_FIELDS)

    def has_add_permission(self, request):
        return request.user.is_superuser

    actions = ["check_health", "sync_gpu_groups"]

    @admin.display(description="address")
    def address(self, host):
        return host.address

    @admin.display(description="who may use it")
    def users(self, host):
        """The deployment's choice (``allowed_groups`` in the host file), never an admin edit."""
        if not host.allowed_groups:
            return "everyone"
        return f"{', '.join(host.allowed_groups)} (and the operators' cases)"

    @admin.display(description="health")
    def health(self, host):
        """Answering, failing, or backing off: with the last error, since when, and the next try."""
        return mark_safe(render_to_string("admin/resources/hpchost/_health.html", {"host": host}))  # noqa: S308

    @admin.display(description="trusted host key")
    def key_fingerprint(self, host):
        if host.is_local:
            return "none: the host is this machine, no SSH involved"
        trusted = [*hostkeys.file_fingerprints(host), hostkeys.row_fingerprint(host)]
        return ", ".join(fp for fp in trusted if fp) or "none trusted yet"

    @admin.display(description="")
    def pages(self, host):
        return format_html(
            "{} · {}",
            link("console:remote_state", "remote state", host.pk),
            link("admin:resources_hpchost_trust", "host key", host.pk),
        )

    @admin.action(
        description="Check health now (ends a back-off, asks pueue's version)",
        permissions=["view_remote_state"],
    )
    def check_health(self, request, queryset):
        run_each(request, queryset, operations.check_health)
        return HttpResponseRedirect(safe_next(request)) if safe_next(request) else None

    @admin.action(description="Sync GPU groups from the hosts' pueue groups", permissions=["sync_gpugroups"])
    def sync_gpu_groups(self, request, queryset):
        run_each(request, queryset, operations.sync_groups)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, each checked by delete_view
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        """Refused, with the reason, for a host that cases ran on: they and their GPU groups point at it."""
        host = self.get_object(request, object_id)
        if host is not None and (count := cases_on(host)):
            messages.error(
                request,
                f"{host.name} cannot be deleted: {count} case{'s' if count != 1 else ''} ran on its GPU groups "
                "and keep pointing at them. Disable the host (untick enabled) to stop using it.",
            )
            return HttpResponseRedirect(reverse("admin:resources_hpchost_change", args=[host.pk]))
        return super().delete_view(request, object_id, extra_context)

    def has_view_remote_state_permission(self, request):
        return request.user.has_perm("resources.view_remote_state")

    def has_sync_gpugroups_permission(self, request):
        return request.user.has_perm("resources.sync_gpugroups")

    def get_urls(self):
        trust = self.admin_site.admin_view(TrustKeyView.as_view())
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
    # The status and holder are the lock: they change only through resources.services.
    readonly_fields = ("status", "holder", "lease_generation", "assigned_at", "blocked_reason")
    exclude = ("holder_id",)
    actions = ["enable_groups", "disable_groups", "release_groups", "sync_hosts"]

    def has_delete_permission(self, request, obj=None):
        """Never an assigned group, nor one that cases ran in (they point at it): disable it instead."""
        allowed = super().has_delete_permission(request, obj)
        if not allowed or obj is None:
            return allowed
        return obj.status != GpuGroup.Status.ASSIGNED and not obj.cases.exists()

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

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
        run_each(request, queryset, lambda group: operations.set_group_enabled(group, True))

    @admin.action(description="Disable the selected GPU groups (free ones only)", permissions=["enable"])
    def disable_groups(self, request, queryset):
        run_each(request, queryset, lambda group: operations.set_group_enabled(group, False))

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
        run_each(request, queryset.select_related("host"), operations.release_idle_group)
        return None

    @admin.action(description="Sync GPU groups from the hosts of the selected groups", permissions=["sync"])
    def sync_hosts(self, request, queryset):
        run_each(request, HpcHost.objects.filter(pk__in=queryset.values("host")), operations.sync_groups)

    def has_enable_permission(self, request):
        return request.user.has_perm("resources.enable_gpugroup")

    def has_release_permission(self, request):
        return request.user.has_perm("resources.release_gpugroup")

    def has_sync_permission(self, request):
        return request.user.has_perm("resources.sync_gpugroups")
