"""The console's admin: the notifications sent, each user's notification choices, GPU accounting,
and django-q2's own pages, made safe for staff who are not superusers.

A schedule or a queued task names any importable function with any arguments (``os.system``),
and "resubmit" runs a failed task again: whoever may add or change them may run code on every
worker. So for everyone but superusers django-q2's pages are read-only, without actions.
"""

from django.contrib import admin
from django.urls import path
from django.utils import timezone

from cases.access import sees_all

from .models import GpuAccounting, Notification, NotificationPreference
from .views import ACCOUNTING_PERMISSION, GpuAccountingCsv, GpuAccountingView


class ReadOnlyUnlessSuperuser:
    def has_add_permission(self, request, *args):
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def get_actions(self, request):
        return super().get_actions(request) if request.user.is_superuser else {}


for model, model_admin in list(admin.site._registry.items()):
    if model._meta.app_label == "django_q":
        admin.site.unregister(model)
        safe = type(type(model_admin).__name__, (ReadOnlyUnlessSuperuser, type(model_admin)), {})
        admin.site.register(model, safe)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """What was announced, and whether the mail and the webhook took it: read-only."""

    list_display = ("created_at", "event", "subject", "delivery")
    list_filter = ("event",)
    search_fields = ("subject", "reason", "key")
    show_full_result_count = False
    readonly_fields = [f.name for f in Notification._meta.fields]

    @admin.display(description="delivery")
    def delivery(self, row):
        parts = []
        for channel, state, error in (
            ("mail", row.mail_state, row.mail_error),
            ("webhook", row.webhook_state, row.webhook_error),
        ):
            if state != Notification.State.OFF:
                parts.append(f"{channel} {Notification.State(state).label}" + (f": {error}" if error else ""))
        if row.next_try_at:
            parts.append(f"next try {timezone.localtime(row.next_try_at):%H:%M:%S}")
        return "; ".join(parts) or "-"

    def has_view_permission(self, request, obj=None):
        """An announcement names its case: for operators only (owners get theirs by mail)."""
        return sees_all(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GpuAccounting)
class GpuAccountingAdmin(admin.ModelAdmin):
    """The admin index's entry "GPU accounting", for whoever may open the page. Its URLs are the page
    (``views.GpuAccountingView``, named as Django names a list, so the index links to it) and its CSV
    download; nothing is ever added, changed or deleted through it."""

    def has_module_permission(self, request):
        return request.user.has_perm(ACCOUNTING_PERMISSION)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(ACCOUNTING_PERMISSION)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        page = self.admin_site.admin_view
        return [
            path("", page(GpuAccountingView.as_view()), name="console_gpuaccounting_changelist"),
            path("csv/", page(GpuAccountingCsv.as_view()), name="console_gpuaccounting_csv"),
        ]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    """A user's own notification choices: each user sees, adds and edits their own row only (a
    superuser every row). The row is made for whoever adds it; the address mailed is the user's
    e-mail address, which an operator sets on the user."""

    list_display = ("user", "mail_on_completion", "address")
    readonly_fields = ("address",)

    @admin.display(description="mailed to")
    def address(self, row):
        if row.user_id is None:
            return "the e-mail address of your user"
        return row.user.email or "no e-mail address: ask an operator to set it"

    def get_queryset(self, request):
        rows = super().get_queryset(request).select_related("user")
        return rows if request.user.is_superuser else rows.filter(user=request.user)

    def get_fields(self, request, obj=None):
        mine = ("mail_on_completion", "address")
        return ("user", *mine) if request.user.is_superuser else mine

    def has_add_permission(self, request):
        """One row per user: a user who has theirs edits it."""
        allowed = super().has_add_permission(request)
        if request.user.is_superuser:
            return allowed
        return allowed and not NotificationPreference.objects.filter(user=request.user).exists()

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser:
            obj.user = request.user
        super().save_model(request, obj, form, change)
