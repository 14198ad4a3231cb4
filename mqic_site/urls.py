"""URLs: the Django admin is MQIC's operations console; the console app adds the pages that
read both apps, under the admin's own prefix and login, and ``/metrics`` for Prometheus."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from console.metrics import metrics

admin.site.site_header = f"MQIC {settings.MQIC_VERSION} operations"
admin.site.site_title = "MQIC"
admin.site.index_title = "Operations console"
# No public site: "View site" would lead to a 404; the console is the admin itself.
admin.site.site_url = None
# The case list needs the width (its filters are on the right); the index lists every model.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("metrics", metrics, name="metrics"),
    path("admin/console/", include("console.urls")),
    path("admin/", admin.site.urls),
]
