"""URLs: the Django admin is MQIC's operations console; its custom pages hang off the model admins."""

from django.contrib import admin
from django.urls import path

admin.site.site_header = "MQIC operations"
admin.site.site_title = "MQIC"
admin.site.index_title = "Operations console"

urlpatterns = [
    path("admin/", admin.site.urls),
]
