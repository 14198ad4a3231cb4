from django.contrib import admin

from .models import Case, CaseEvent, Installation


class CaseEventInline(admin.TabularInline):
    model = CaseEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "actor", "from_status", "to_status", "reason", "detail")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "gpu_group", "label", "pueue_task_id", "attempts", "created_at")
    list_filter = ("status", "gpu_group")
    search_fields = ("name", "label", "=pueue_task_id")
    list_select_related = ("gpu_group",)
    show_full_result_count = False
    readonly_fields = (
        "status",
        "label",
        "gpu_group",
        "lease_generation",
        "lease_expires_at",
        "remote_dir",
        "pueue_task_id",
        "pueue_task_created_at",
        "last_seen_task",
        "attempts",
        "exit_code",
        "last_error",
        "log_tail",
        "result_path",
        "created_at",
        "updated_at",
        "submitting_at",
        "running_at",
        "finished_at",
    )
    inlines = [CaseEventInline]


@admin.register(CaseEvent)
class CaseEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "case", "actor", "from_status", "to_status", "reason")
    list_filter = ("to_status", "actor")
    list_select_related = ("case",)
    search_fields = ("case__name", "reason")
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    readonly_fields = ("key", "created_at")

    def has_add_permission(self, request):
        return False
