"""The console's pages, inside the admin (its login, its look): mounted at ``admin/console/``."""

from django.contrib import admin
from django.urls import path

from . import views

app_name = "console"


def page(view):
    return admin.site.admin_view(view.as_view())


urlpatterns = [
    path("hosts/<int:host_id>/remote/", page(views.RemoteStateView), name="remote_state"),
    path("hosts/<int:host_id>/tasks/<int:task_id>/<str:verb>/", page(views.OrphanView), name="orphan"),
    path("cases/<int:pk>/results/", page(views.ResultsView), name="results"),
    path("cases/<int:pk>/results/archive/", page(views.ResultArchive), name="results_archive"),
    path("cases/<int:pk>/results/file/<path:path>", page(views.ResultFile), name="result_file"),
    path("cases/<int:pk>/results/raw/<str:token>", page(views.ResultFile), name="result_raw"),
    path("live/overview/", page(views.LiveOverview), name="live_overview"),
    path("live/cases/", page(views.LiveCases), name="live_cases"),
    path("live/cases/<int:pk>/", page(views.LiveCase), name="live_case"),
    path("live/cases/<int:pk>/log/", page(views.LiveLog), name="live_log"),
]
