"""The case admin: the operators' list and case page, with the operator actions.

A status is never edited here: every change goes through ``cases.services.operations``,
each action behind its own permission, and those that touch the remote side ask first.
"""

import json

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from mqic_site.admin_ui import badge, confirmation, confirmed, safe_next, show

from . import admin_views
from .models import HOLDS_GPU, Case, CaseEvent, CaseStatus, Installation
from .selectors import stuck_cases
from .services import operations

S = CaseStatus
STATUS_COLOURS = {
    S.SUBMITTED: "#5c6f82",
    S.SUBMITTING: "#1971c2",
    S.RUNNING: "#0c8599",
    S.COMPLETED: "#2f9e44",
    S.FAILED: "#e03131",
    S.CANCELLED: "#868e96",
    S.REJECTED: "#e8590c",
}
# Bulk actions act case by case (a transaction and maybe an SSH round trip each): keep them bounded.
MAX_BULK = 500


def status_badge(status: str):
    return badge(status, STATUS_COLOURS.get(status, "#868e96"))


class LeaseFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("expired", "stuck past its lease")]

    def queryset(self, request, queryset):
        return queryset & stuck_cases() if self.value() == "expired" else queryset


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "status_display",
        "gpu_group",
        "host",
        "label",
        "pueue_task_id",
        "attempts",
        "created_at",
        "updated_at",
    )
    list_filter = (
        "status",
        "gpu_group",
        ("gpu_group__host", admin.RelatedFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
        LeaseFilter,
    )
    search_fields = ("name", "label")
    search_help_text = "Name or label contains; a number also finds the pueue task id."
    list_select_related = ("gpu_group__host",)
    show_full_result_count = False
    ordering = ("-created_at",)
    change_form_template = "admin/cases/case/change_form.html"
    change_list_template = "admin/cases/case/change_list.html"
    actions = ["retry_cases", "cancel_cases", "mark_failed_cases"]
    fieldsets = (
        (None, {"fields": ("name", "status_display", "source_path", "label", "attempts", "last_error")}),
        (
            "Remote",
            {
                "fields": (
                    "gpu_group",
                    "host",
                    "remote_dir",
                    "upload_percent",
                    "pueue_task_id",
                    "pueue_task_created_at",
                    "lease_generation",
                    "lease_expires_at",
                    "task_missing_since",
                    "last_seen_task_display",
                )
            },
        ),
        ("Result", {"fields": ("exit_code", "result_path", "log_tail")}),
        ("Times", {"fields": ("created_at", "updated_at", "submitting_at", "running_at", "finished_at")}),
    )

    # -- list and page ------------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_display(self, case):
        return status_badge(case.status)

    @admin.display(description="host", ordering="gpu_group__host__name")
    def host(self, case):
        return case.gpu_group.host if case.gpu_group else "-"

    @admin.display(description="remote task as last seen")
    def last_seen_task_display(self, case):
        if not case.last_seen_task:
            return "-"
        return format_html("<pre class='mqic-json'>{}</pre>", json.dumps(case.last_seen_task, indent=2))

    def get_search_results(self, request, queryset, search_term):
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip().isdigit():
            found |= queryset.filter(pueue_task_id=int(search_term))
        return found, duplicates

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_add_permission(self, request):
        return False  # cases come from the inbox

    def has_change_permission(self, request, obj=None):
        return False  # the page is read-only: a status changes through the actions only

    def has_delete_permission(self, request, obj=None):
        """Only a finished case may be deleted, one at a time (there is no bulk delete)."""
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or obj.status not in HOLDS_GPU)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        case = self.get_object(request, unquote(object_id))
        if case is not None:
            extra_context = (extra_context or {}) | {
                "events": [(event, _pretty(event.detail)) for event in case.events.all()],
                "operations": self.operations_for(request, case),
                "can_fetch_log": request.user.has_perm("resources.view_remote_state")
                and case.pueue_task_id is not None,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def operations_for(self, request, case):
        """The (action, label) buttons this user may press for this case in its status."""
        applies = {
            "retry_cases": case.status in operations.RETRYABLE and self.has_retry_permission(request),
            "cancel_cases": case.status in operations.CANCELLABLE and self.has_cancel_permission(request),
            "mark_failed_cases": case.status in HOLDS_GPU and self.has_mark_failed_permission(request),
        }
        labels = {"retry_cases": "Retry", "cancel_cases": "Cancel…", "mark_failed_cases": "Mark failed…"}
        return [(action, labels[action]) for action, ok in applies.items() if ok]

    # -- actions ------------------------------------------------------------------------------

    @admin.action(description="Retry the selected cases (back to submitted)", permissions=["retry"])
    def retry_cases(self, request, queryset):
        return self.run(request, queryset, operations.retry)

    @admin.action(description="Cancel the selected cases (kills their remote tasks)…", permissions=["cancel"])
    def cancel_cases(self, request, queryset):
        if not confirmed(request):
            return self.confirm(
                request,
                queryset,
                "cancel_cases",
                "Cancel cases",
                "A waiting case is cancelled. A submitting or running case is cancelled, its GPU group "
                "released, and then its pueue task is killed by id on the host.",
            )
        return self.run(request, queryset, operations.cancel)

    @admin.action(
        description="Mark the selected cases failed and release their GPU groups…", permissions=["mark_failed"]
    )
    def mark_failed_cases(self, request, queryset):
        if not confirmed(request):
            return self.confirm(
                request,
                queryset,
                "mark_failed_cases",
                "Mark cases failed",
                "Each submitting or running case is marked failed and its GPU group released. Its pueue "
                "task is NOT killed: if it still runs, it shows as an orphan on the host's remote state page.",
            )
        return self.run(request, queryset, operations.mark_failed)

    def run(self, request, queryset, operation):
        if queryset.count() > MAX_BULK:
            self.message_user(request, f"select at most {MAX_BULK} cases for one action", "error")
            return None
        show(request, (operation(case, request.user) for case in queryset.select_related("gpu_group__host")))
        return HttpResponseRedirect(safe_next(request)) if safe_next(request) else None

    def confirm(self, request, queryset, action, title, warning):
        cases = list(queryset[: MAX_BULK + 1])
        if len(cases) > MAX_BULK:
            self.message_user(request, f"select at most {MAX_BULK} cases for one action", "error")
            return None
        rows = [(case, status_badge(case.status)) for case in cases]
        return confirmation(request, self, action=action, title=title, warning=warning, rows=rows)

    def has_retry_permission(self, request):
        return request.user.has_perm("cases.retry_case")

    def has_cancel_permission(self, request):
        return request.user.has_perm("cases.cancel_case")

    def has_mark_failed_permission(self, request):
        return request.user.has_perm("cases.mark_failed_case")

    # -- custom pages -------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "reconcile/",
                view(admin_views.ReconcileView.as_view(model_admin=self)),
                name="cases_case_reconcile",
            ),
            path("<int:pk>/log/", view(admin_views.LogTailView.as_view(model_admin=self)), name="cases_case_log"),
            path(
                "remote/<int:host_id>/",
                view(admin_views.RemoteStateView.as_view(model_admin=self)),
                name="cases_case_remote_state",
            ),
            path(
                "remote/<int:host_id>/task/<int:task_id>/<str:verb>/",
                view(admin_views.OrphanView.as_view(model_admin=self)),
                name="cases_case_orphan",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = (extra_context or {}) | {
            "can_reconcile": request.user.has_perm("cases.reconcile_case"),
            "reconcile_url": reverse("admin:cases_case_reconcile"),
        }
        return super().changelist_view(request, extra_context)


def _pretty(detail) -> str:
    return json.dumps(detail, indent=2, ensure_ascii=False) if detail else ""


@admin.register(CaseEvent)
class CaseEventAdmin(admin.ModelAdmin):
    """The audit trail: read-only, never deleted."""

    list_display = ("created_at", "case", "actor", "from_status", "to_status", "reason")
    list_filter = ("to_status", "actor")
    list_select_related = ("case",)
    search_fields = ("case__name", "reason")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    readonly_fields = ("key", "created_at")

    def has_add_permission(self, request):
        return False
