"""``/metrics``: what a site's Prometheus scrapes, in the OpenMetrics text format.

Built with ``prometheus_client`` and a collector that reads the database at each scrape, rather
than django-prometheus: MQIC's numbers (cases by status, GPU groups, passes, hosts) live in the
database and are written by many processes (qcluster workers, the watcher, the web server), so
in-process counters would each see a part and need a multi-process directory to be summed. A
scrape-time collector gives the same answer whatever process serves it, costs a handful of
aggregate queries, and leaves request instrumentation (django-prometheus's strength) out of
the operator's way. Reading it needs the bearer token ``MQIC_METRICS_TOKEN`` or an operator's
session: the numbers count every owner's cases, so a user who sees only their own never reads them.

``mqic_gpu_seconds_total`` is a counter read from the GPU accounting ledger, which is only ever added
to (``cases.models.GpuUsage``): it never goes down, whatever cases are deleted or pruned. Its label
values are user and host names, escaped by ``prometheus_client`` as the format says.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

from cases.access import sees_all

from .selectors import metric_values


class MqicCollector:
    """Every ``mqic_*`` metric, read from the database when scraped."""

    def collect(self):
        build = InfoMetricFamily("mqic_build", "The MQIC release that answers.")
        build.add_metric([], {"version": settings.MQIC_VERSION})
        yield build
        values = metric_values()
        cases = GaugeMetricFamily("mqic_cases", "Cases by status.", labels=["status"])
        for status, count in values.cases.items():
            cases.add_metric([status], count)
        yield cases
        yield GaugeMetricFamily(
            "mqic_cases_stuck", "Cases past their lease while submitting or finishing.", value=values.stuck
        )
        yield GaugeMetricFamily(
            "mqic_cases_troubled", "Cases not finished whose handling raised errors.", value=values.troubled
        )
        groups = GaugeMetricFamily(
            "mqic_gpu_groups", "GPU groups by state (busy: held by a case; free: assignable).", labels=["state"]
        )
        for state, count in values.groups.items():
            groups.add_metric([state], count)
        yield groups
        yield from _pass_metrics(values.passes)
        yield from _host_metrics(values.hosts)
        gpu = CounterMetricFamily(
            "mqic_gpu_seconds",
            "GPU seconds of ended attempts (from the claim of the GPU group to the end, times its devices), "
            'by case owner ("(none)": the operators\' cases) and host.',
            labels=["owner", "host"],
            unit="seconds",
        )
        for (owner, host), seconds in sorted(values.gpu_seconds.items()):
            gpu.add_metric([owner, host], seconds)
        yield gpu


def _pass_metrics(passes):
    duration = GaugeMetricFamily(
        "mqic_pass_last_duration_seconds",
        "How long the last run of each pass took.",
        labels=["kind"],
        unit="seconds",
    )
    finished = GaugeMetricFamily(
        "mqic_pass_last_finished_timestamp_seconds",
        "When the last run of each pass ended.",
        labels=["kind"],
        unit="seconds",
    )
    failed = GaugeMetricFamily(
        "mqic_pass_last_failed", "1 if the last run of the pass failed (raised), else 0.", labels=["kind"]
    )
    runs = GaugeMetricFamily(
        "mqic_pass_runs_last_hour", "Runs of each pass in the last hour, by outcome.", labels=["kind", "outcome"]
    )
    for row in passes:
        if row.last is not None:
            duration.add_metric([row.kind], row.last.seconds)
            finished.add_metric([row.kind], row.last.finished_at.timestamp())
            failed.add_metric([row.kind], int(row.last.outcome == "failed"))
        for outcome, count in row.last_hour.items():
            runs.add_metric([row.kind, outcome], count)
    yield from (duration, finished, failed, runs)


def _host_metrics(hosts):
    up = GaugeMetricFamily(
        "mqic_host_up",
        "1 if the host answered its last contact, 0 if it is failing or backing off.",
        labels=["host"],
    )
    age = GaugeMetricFamily(
        "mqic_host_last_contact_age_seconds",
        "Seconds since the host last answered.",
        labels=["host"],
        unit="seconds",
    )
    failures = GaugeMetricFamily("mqic_host_consecutive_failures", "Failed contacts in a row.", labels=["host"])
    for host in hosts:
        up.add_metric([host.name], int(host.up))
        if host.contact_age is not None:
            age.add_metric([host.name], host.contact_age)
        failures.add_metric([host.name], host.failures)
    yield from (up, age, failures)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(MqicCollector())


def authorised(request) -> bool:
    """The bearer token (compared in constant time), or a logged-in staff member who sees every case."""
    token = settings.MQIC_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    user = request.user
    return user.is_authenticated and user.is_active and user.is_staff and sees_all(user)


@require_GET
def metrics(request):
    if not authorised(request):
        why = "a bearer token (MQIC_METRICS_TOKEN) or an operator's session is needed\n"
        response = HttpResponse(why, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="mqic metrics"'
        return response
    if "application/openmetrics-text" not in request.headers.get("Accept", ""):
        # A browser (or curl) asked: the same text, as text it shows rather than a download.
        return HttpResponse(generate_latest(REGISTRY), content_type="text/plain; charset=utf-8")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
