"""django-q2's own admin pages, made safe for staff who are not superusers.

A schedule or a queued task names any importable function with any arguments (``os.system``),
and "resubmit" runs a failed task again: whoever may add or change them may run code on every
worker. So for everyone but superusers django-q2's pages are read-only, without actions.
"""

from django.contrib import admin

from .models import Notification


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
        if row.mailed_at or row.mail_error:
            parts.append("mail failed: " + row.mail_error if row.mail_error else "mailed")
        if row.posted_at or row.webhook_error:
            parts.append("webhook failed: " + row.webhook_error if row.webhook_error else "posted")
        return "; ".join(parts) or "-"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
