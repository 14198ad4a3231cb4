"""Small builders for rows the tests need; plain functions, no factory library."""

from __future__ import annotations

import itertools

from cases.models import Case, CaseStatus
from resources.models import GpuGroup, HpcHost

_seq = itertools.count(1)


def make_host(**fields) -> HpcHost:
    n = next(_seq)
    defaults = {"name": f"host{n}", "hostname": "localhost", "base_dir": f"/tmp/mqic-test-{n}"}
    return HpcHost.objects.create(**(defaults | fields))


def make_group(host: HpcHost | None = None, **fields) -> GpuGroup:
    n = next(_seq)
    host = host or make_host()
    defaults = {"name": f"gpu{n}", "pueue_group": f"gpu{n}"}
    return GpuGroup.objects.create(host=host, **(defaults | fields))


def make_case(status: str = CaseStatus.SUBMITTED, **fields) -> Case:
    n = next(_seq)
    defaults = {"name": f"case{n}", "source_path": f"/cases/case{n}"}
    return Case.objects.create(status=status, **(defaults | fields))
