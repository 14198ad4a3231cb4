from django.contrib import admin

from .models import GpuGroup, HpcHost


@admin.register(HpcHost)
class HpcHostAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "port", "username", "enabled", "last_contact_at", "pueue_version")
    readonly_fields = ("last_contact_at", "last_error", "pueue_version")


@admin.register(GpuGroup)
class GpuGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "host", "pueue_group", "status", "holder_id", "assigned_at", "lease_generation")
    list_filter = ("status", "host")
    list_select_related = ("host",)
    readonly_fields = ("status", "holder_id", "lease_generation", "assigned_at", "blocked_reason")
