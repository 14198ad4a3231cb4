"""The case admin: the operators' list and case page, with the operator actions.

A status is never edited here: every change goes through ``cases.services.operations``,
each action behind its own permission, and those that touch the remote side ask first.
Each action is written to the case's timeline (by the service) and to the admin's
"Recent actions" (``admin_ui.log_outcome``).

The cells that change while a case moves (status, run time, place in the wait and why, last
error) are wrapped in ``data-live`` spans: the console's live endpoint renders the same cells
again and the page swaps them in place (see ``console.live``). The place in the wait comes from
``services.queueing``, the rule the submit pass follows, for the rows shown (``CaseChangeList``).
"""

import json
from datetime import timedelta
from functools import cached_property

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from mqic_site.admin_ui import badge, confirmation, confirmed, given_why, link, log_outcome, safe_next, show

from . import access, admin_views
from .models import FINISHED, HOLDS_GPU, Case, CaseEvent, CaseStatus, Installation, PassRun
from .selectors import stuck_cases, troubled_cases, with_timing
from .services import operations, queueing

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
OWNERS_SEARCHED = 100
"""A search finds the cases of at most this many users whose name holds the term."""
SECOND_FORMAT = "%Y-%m-%d %H:%M:%S"


def status_badge(status: str):
    return badge(status, STATUS_COLOURS.get(status, "#868e96"))


def live(key: str, content):
    """A piece of a page that the live endpoint may replace (``data-live`` is its key)."""
    return format_html('<span data-live="{}">{}</span>', key, content)


def human_duration(span: timedelta | None) -> str:
    """``1h 02m 03s``, ``4m 05s``, ``7s``: to the second, the largest unit first."""
    if span is None:
        return "-"
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def at(moment) -> str:
    return timezone.localtime(moment).strftime(SECOND_FORMAT) if moment else "-"


# -- the cells that change while a case moves: each renders from the row (annotated by
# ``selectors.with_timing`` and placed by ``queueing``) without a query; the live endpoint renders
# them again ------------------------------------------------------------------------------------


def status_cell(case: Case):
    return status_badge(case.status)


def run_time_cell(case: Case):
    """Running: the time so far; finished: start to end; the exact times on hover."""
    run_time = getattr(case, "run_time", None)
    if run_time is None:
        return "-"
    title = f"started {at(case.running_at)}" + (
        f", ended {at(case.finished_at)}" if case.status in FINISHED else ""
    )
    text = human_duration(run_time)
    if case.status == S.RUNNING:
        return format_html('<span title="{}">running {}</span>', title, text)
    return format_html('<span title="{}">{}</span>', title, text)


def position_cell(case: Case):
    position = getattr(case, "wait_position", None)
    if position is None:
        return "-"
    target = case.wanted_group or case.wanted_host
    if not target:
        return format_html('<span title="{}">#{}</span>', "its place in the wait for a free GPU group", position)
    what = f"GPU group {case.wanted_group}" if case.wanted_group else f"a GPU group of host {case.wanted_host}"
    return format_html('<span title="its place in the wait for {}">#{} for {}</span>', what, position, target)


def why_cell(case: Case):
    """Why a waiting case is where it is: its owner's recent GPU time, a busy target, its owner's
    quota, no host its owner may use (``queueing.Places``)."""
    return getattr(case, "wait_why", "")


def error_cell(case: Case):
    if not case.last_error:
        return ""
    return format_html('<span class="mqic-clip" title="{}">{}</span>', case.last_error, case.last_error)


def where_cell(case: Case):
    if case.gpu_group_id is None:
        return "-"
    return format_html("{} @ {}", case.gpu_group.name, case.gpu_group.host.name)


def task_cell(case: Case):
    return "-" if case.pueue_task_id is None else str(case.pueue_task_id)


LIVE_CELLS = {
    "status": status_cell,
    "run_time": run_time_cell,
    "position": position_cell,
    "why": why_cell,
    "error": error_cell,
    "where": where_cell,
    "task": task_cell,
}
"""The cells of a case that the live endpoint renders again, by the name in their ``data-live`` key."""


def live_key(case: Case, cell: str) -> str:
    return f"case-{case.pk}-{cell}"


def live_cell(case: Case, cell: str):
    return live(live_key(case, cell), LIVE_CELLS[cell](case))


QUEUE_ORDER = "queue_order"
"""The place column's sort key: stands for ``queueing.Places.ordering`` (read per request)."""


class CaseChangeList(ChangeList):
    """The case list: sorted by place in the queue on request, and its rows placed in it."""

    @cached_property
    def places(self) -> queueing.Places:
        return queueing.Places.read()

    def get_ordering(self, request, queryset):
        ordering = []
        for key in super().get_ordering(request, queryset):
            if isinstance(key, str) and key.lstrip("-") == QUEUE_ORDER:
                ordering += self.places.ordering(descending=key.startswith("-"))
            else:
                ordering.append(key)
        return ordering

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        if any(case.status == S.SUBMITTED for case in self.result_list):
            self.places.place(self.result_list)


class LeaseFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("expired", "stuck past its lease")]

    def queryset(self, request, queryset):
        return queryset & stuck_cases() if self.value() == "expired" else queryset


class OwnerFilter(admin.SimpleListFilter):
    """Whose cases (operators only): the users who own a case, found by the owner index (one probe a
    user, not a pass over every case), and the cases nobody owns."""

    title = "owner"
    parameter_name = "owner"
    NOBODY = "none"

    def lookups(self, request, model_admin):
        owners = get_user_model()._default_manager.filter(Exists(Case.objects.filter(owner=OuterRef("pk"))))
        return [(self.NOBODY, "nobody (the operators')")] + [
            (str(user.pk), user.get_username()) for user in owners.order_by(get_user_model().USERNAME_FIELD)
        ]

    def queryset(self, request, queryset):
        if self.value() == self.NOBODY:
            return queryset.filter(owner__isnull=True)
        if self.value() and self.value().isdigit():
            return queryset.filter(owner_id=int(self.value()))
        return queryset


class TroubleFilter(admin.SimpleListFilter):
    title = "trouble"
    parameter_name = "trouble"

    def lookups(self, request, model_admin):
        return [("errors", "not finished, with errors")]

    def queryset(self, request, queryset):
        return queryset & troubled_cases() if self.value() == "errors" else queryset


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = (
        "name_display",
        "status_display",
        "where",
        "task",
        "tries",
        "age",
        "run_time_display",
        "position_display",
        "why_display",
        "error_display",
    )
    list_display_links = ("name_display",)
    list_filter = (
        "status",
        "gpu_group",
        ("gpu_group__host", admin.RelatedFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
        LeaseFilter,
        TroubleFilter,
    )
    search_fields = ("name", "label")
    search_help_text = "Name or label contains; a number also finds the pueue task id; operators: the owner too."
    list_select_related = ("gpu_group__host", "owner")  # the owner: a waiting case's place names it
    show_full_result_count = False
    ordering = ("-created_at",)
    change_form_template = "admin/cases/case/change_form.html"
    change_list_template = "admin/cases/case/change_list.html"
    actions = ["retry_cases", "recheck_cases", "cancel_cases", "mark_failed_cases"]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name_full",
                    "owner",
                    "status_display",
                    "position_display",
                    "why_display",
                    "run_time_display",
                    "source_path",
                    "label",
                    "attempts",
                    "error_display",
                )
            },
        ),
        (
            "Remote",
            {
                "fields": (
                    "where",
                    "remote_dir",
                    "upload_percent",
                    "task",
                    "pueue_task_created_at",
                    "lease_generation",
                    "lease_expires_at",
                    "task_missing_since",
                    "last_seen_task_display",
                )
            },
        ),
        ("Result", {"fields": ("exit_code", "results_display", "log_tail")}),
        ("Times", {"fields": ("created_at", "updated_at", "submitting_at", "running_at", "finished_at")}),
    )

    # -- list and page ------------------------------------------------------------------------

    def get_queryset(self, request):
        """The cases this user may see (``access``): the list, its counts, the case page, the history
        and every action start from here, so another owner's case is never listed nor acted on."""
        return with_timing(access.visible_cases(request.user, super().get_queryset(request)))

    def get_object(self, request, object_id, from_field=None):
        """A case the user may not see is a 404 for them, as one that does not exist: it says nothing
        of its existence (operators keep the admin's usual "does not exist" redirect)."""
        case = super().get_object(request, object_id, from_field)
        if case is None and not access.sees_all(request.user):
            raise Http404("no such case")
        if case is not None:
            queueing.place([case])
        return case

    # An operator sees whose each case is, filters and searches by it; a user sees only their own.

    def get_list_display(self, request):
        """The owner comes last: the other columns keep their places, and the sort links their numbers."""
        shown = super().get_list_display(request)
        return (*shown, "owner_display") if access.sees_all(request.user) else shown

    def get_list_filter(self, request):
        return (*self.list_filter, OwnerFilter) if access.sees_all(request.user) else self.list_filter

    @admin.display(description="owner", ordering="owner__username")
    def owner_display(self, case):
        return case.owner.get_username() if case.owner_id else "-"

    def get_changelist(self, request, **kwargs):
        return CaseChangeList

    @admin.display(description="name", ordering="name")
    def name_display(self, case):
        """Clipped to its column; the whole name on hover (a name may be 255 bytes)."""
        return format_html('<span class="mqic-name" title="{}">{}</span>', case.name, case.name)

    @admin.display(description="name")
    def name_full(self, case):
        return format_html('<span class="mqic-wrap">{}</span>', case.name)

    @admin.display(description="status", ordering="status")
    def status_display(self, case):
        return live_cell(case, "status")

    @admin.display(description="GPU group", ordering="gpu_group__name")
    def where(self, case):
        return live_cell(case, "where")

    @admin.display(description="task", ordering="pueue_task_id")
    def task(self, case):
        return live_cell(case, "task")

    @admin.display(description="tries", ordering="attempts")
    def tries(self, case):
        return case.attempts

    @admin.display(description="age", ordering="-created_at")
    def age(self, case):
        """Time since the case was registered; the registration time to the second on hover.

        Sorted by age ascending, the youngest comes first: the reverse of ``created_at``."""
        return format_html('<span title="registered {}">{}</span>', at(case.created_at), _age(case.created_at))

    @admin.display(description="run time", ordering="run_time")
    def run_time_display(self, case):
        return live_cell(case, "run_time")

    @admin.display(description="waiting", ordering=QUEUE_ORDER)
    def position_display(self, case):
        return live_cell(case, "position")

    @admin.display(description="why there")
    def why_display(self, case):
        return live_cell(case, "why")

    @admin.display(description="last error or reason")
    def error_display(self, case):
        return live_cell(case, "error")

    @admin.display(description="results")
    def results_display(self, case):
        page = link("console:results", "the results page", case.pk)
        return format_html("{} (files, the job log, the whole folder as an archive)", page)

    @admin.display(description="remote task as last seen")
    def last_seen_task_display(self, case):
        """While the case holds a GPU, the task as the last pass saw it; after, history only."""
        if not case.last_seen_task:
            return "-"
        text = json.dumps(case.last_seen_task, indent=2)
        if case.status in HOLDS_GPU:
            return format_html("<pre class='mqic-json'>{}</pre>", text)
        return format_html(
            "<p class='mqic-history'>History: task {} as last seen before the case became {} "
            "(not its state now; see the attempts below).</p>"
            "<details><summary>the snapshot</summary><pre class='mqic-json'>{}</pre></details>",
            case.last_seen_task.get("id", "?"),
            case.status,
            text,
        )

    def get_search_results(self, request, queryset, search_term):
        """Name or label; a number also finds the task id; for operators, an owner's user name too
        (the few users who match first, then their cases by the owner index: no join over cases)."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term.isdigit():
            found |= queryset.filter(pueue_task_id=int(term))
        if term and access.sees_all(request.user):
            model = get_user_model()
            users = model._default_manager.filter(**{f"{model.USERNAME_FIELD}__icontains": term})
            if owners := list(users.values_list("pk", flat=True)[:OWNERS_SEARCHED]):
                found |= queryset.filter(owner_id__in=owners)
        return found, duplicates

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_add_permission(self, request):
        return False  # cases come from the inbox

    def has_change_permission(self, request, obj=None):
        return False  # the page is read-only: a status changes through the actions only

    def has_delete_permission(self, request, obj=None):
        """Only a finished case whose remote folders are all cleaned up may be deleted, one at a time
        (no bulk delete): deleting one that holds a GPU, or still has a task or folder on a host,
        would leave a GPU group or remote work that no case explains."""
        allowed = super().has_delete_permission(request, obj)
        if not allowed or obj is None:
            return allowed
        remote_left = obj.attempt_rows.filter(cleaned_at__isnull=True).exists()
        return obj.status in FINISHED and not remote_left

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        case = self.get_object(request, unquote(object_id))
        if case is not None:
            extra_context = (extra_context or {}) | self.live_context(request, case)
        return super().change_view(request, object_id, form_url, extra_context)

    def live_context(self, request, case):
        """What the case page's live parts show (the live endpoint renders them again)."""
        return {
            "events": [(event, _pretty(event.detail)) for event in case.events.all()],
            "attempt_rows": list(case.attempt_rows.select_related("gpu_group__host")),
            "operations": self.operations_for(request, case),
            "can_fetch_log": admin_views.may_follow_log(request.user, case) and case.status == S.RUNNING,
            "can_see_results": request.user.has_perm("console.view_results"),
            "case": case,
            "live_seconds": settings.MQIC_LIVE_SECONDS,
        }

    def operations_for(self, request, case):
        """The (action, label) buttons this user may press for this case in its status."""
        applies = {
            "retry_cases": case.status in operations.RETRYABLE - {S.REJECTED}
            and self.has_retry_permission(request),
            "recheck_cases": case.status == S.REJECTED and self.has_retry_permission(request),
            "cancel_cases": case.status in operations.CANCELLABLE and self.has_cancel_permission(request),
            "mark_failed_cases": case.status in HOLDS_GPU and self.has_mark_failed_permission(request),
        }
        labels = {
            "retry_cases": "Retry",
            "recheck_cases": "Re-check folder",
            "cancel_cases": "Cancel…",
            "mark_failed_cases": "Mark failed…",
        }
        return [(action, labels[action]) for action, ok in applies.items() if ok]

    # -- actions ------------------------------------------------------------------------------

    @admin.action(description="Retry the selected cases (back to submitted)", permissions=["retry"])
    def retry_cases(self, request, queryset):
        return self.run(request, queryset, operations.retry)

    @admin.action(
        description="Re-check the folders of the selected rejected cases (valid: back to submitted)",
        permissions=["retry"],
    )
    def recheck_cases(self, request, queryset):
        return self.run(request, queryset, operations.recheck)

    @admin.action(description="Cancel the selected cases (kills their remote tasks)…", permissions=["cancel"])
    def cancel_cases(self, request, queryset):
        if not confirmed(request):
            return self.confirm(
                request,
                queryset,
                "cancel_cases",
                "Cancel cases",
                "A waiting case is cancelled. A submitting or running case is cancelled, its GPU group "
                "released, and then its pueue task is killed by id on the host. What the job left comes home.",
                ask_why=True,
            )
        why = given_why(request)
        return self.run(request, queryset, lambda case, user: operations.cancel(case, user, why=why))

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
                ask_why=True,
            )
        why = given_why(request)
        return self.run(request, queryset, lambda case, user: operations.mark_failed(case, user, why=why))

    def run(self, request, queryset, operation):
        if queryset.count() > MAX_BULK:
            self.message_user(request, f"select at most {MAX_BULK} cases for one action", "error")
            return None
        outcomes = []
        for case in queryset.select_related("gpu_group__host"):
            outcome = operation(case, request.user)
            log_outcome(request, case, outcome)
            outcomes.append(outcome)
        show(request, outcomes)
        return HttpResponseRedirect(safe_next(request)) if safe_next(request) else None

    def confirm(self, request, queryset, action, title, warning, *, ask_why=False):
        cases = list(queryset[: MAX_BULK + 1])
        if len(cases) > MAX_BULK:
            self.message_user(request, f"select at most {MAX_BULK} cases for one action", "error")
            return None
        rows = [(case, status_badge(case.status)) for case in cases]
        return confirmation(request, self, action=action, title=title, warning=warning, rows=rows, ask_why=ask_why)

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
                view(admin_views.ReconcileView.as_view()),
                name="cases_case_reconcile",
            ),
            path("<int:pk>/log/", view(admin_views.LogTailView.as_view()), name="cases_case_log"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = (extra_context or {}) | {
            "can_reconcile": request.user.has_perm("cases.reconcile_case"),
            "reconcile_url": reverse("admin:cases_case_reconcile"),
            "live_seconds": settings.MQIC_LIVE_SECONDS,
        }
        return super().changelist_view(request, extra_context)


def _age(moment) -> str:
    return human_duration(timezone.now() - moment) if moment else "-"


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

    def get_queryset(self, request):
        """The events of the cases this user may see (``access``): the actor filter lists only theirs."""
        return super().get_queryset(request).filter(case__in=access.visible_cases(request.user))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PassRun)
class PassRunAdmin(admin.ModelAdmin):
    """Every pass that ran, with its outcome: read-only, pruned after two weeks."""

    list_display = ("started_at", "kind", "actor", "outcome", "duration", "summary")
    list_filter = ("outcome", "kind")
    search_fields = ("summary", "error", "actor")
    show_full_result_count = False
    readonly_fields = ("kind", "actor", "started_at", "finished_at", "outcome", "summary", "error_display")

    @admin.display(description="seconds")
    def duration(self, run):
        return f"{run.seconds:.2f}"

    def has_view_permission(self, request, obj=None):
        """A pass's summary and error may name any owner's folders: for operators only."""
        return access.sees_all(request.user) and super().has_view_permission(request, obj)

    @admin.display(description="error")
    def error_display(self, run):
        return format_html("<pre class='mqic-log'>{}</pre>", run.error) if run.error else "-"

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

    def has_delete_permission(self, request, obj=None):
        return False  # the key is in every remote label: a new one would orphan every task
