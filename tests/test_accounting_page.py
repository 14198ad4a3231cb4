"""The admin's "GPU accounting" page and its CSV, through Django's test client: GPU time per owner,
host and month, newest first, with a total; every line for an operator, one's own for a scientist;
the CSV quoted, with names a spreadsheet would run defused; the link on the admin index."""

import csv
import io
import re
from datetime import date

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from cases.models import Attempt, CaseStatus, GpuUsage
from tests.factories import make_case, make_group, make_host
from tests.support.users import scientist, user_with

pytestmark = pytest.mark.django_db
PAGE = reverse("admin:console_gpuaccounting_changelist")
CSV = reverse("admin:console_gpuaccounting_csv")
JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


@pytest.fixture(autouse=True)
def _static(plain_static):
    """Every page here renders without collectstatic."""


@pytest.fixture
def usage(db):
    """Two scientists, the operators' cases and a user with a name a spreadsheet would run, on two hosts."""
    alice = scientist("alice")
    bob = scientist("bob")
    formula = User.objects.create_user('=HYPERLINK("http://x.example","a, b")')
    a, dash = make_host(name="cluster-a"), make_host(name="-cluster")
    for owner, host, month, seconds in [
        (alice, a, JAN, 3600),
        (alice, a, FEB, 7200),
        (alice, dash, FEB, 1800),
        (bob, a, FEB, 36000),
        (None, a, MAR, 900),
        (formula, dash, JAN, 60),
    ]:
        GpuUsage.objects.create(owner=owner, host=host, month=month, gpu_seconds=seconds)
    return alice, bob


@pytest.fixture
def operator(client):
    client.force_login(user_with("operator", ["cases.view_case", "cases.view_all_cases"]))
    return client


def lines(response) -> list[tuple[str, ...]]:
    return [
        (f"{line.month:%Y-%m}", line.owner, line.host, line.gpu_seconds)
        for line in response.context["report"].lines
    ]


def rows_of(response) -> list[list[str]]:
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_an_operator_sees_every_line_newest_month_first_with_the_total(operator, usage):
    response = operator.get(PAGE)
    assert response.status_code == 200
    assert lines(response) == [
        ("2026-03", "(none)", "cluster-a", 900),
        ("2026-02", "alice", "-cluster", 1800),
        ("2026-02", "alice", "cluster-a", 7200),
        ("2026-02", "bob", "cluster-a", 36000),
        ("2026-01", '=HYPERLINK("http://x.example","a, b")', "-cluster", 60),
        ("2026-01", "alice", "cluster-a", 3600),
    ]
    page = response.content.decode()
    assert 'id="accounting-total"' in page and "<th>13.77</th><th>49560</th>" in page
    assert "Every owner's lines" in page
    assert f'href="{CSV}"' in page and "Download CSV" in page
    assert "=HYPERLINK(&quot;http://x.example&quot;,&quot;a, b&quot;)" in page, "escaped as HTML"


def test_a_scientist_sees_their_own_lines_only(client, usage):
    alice, _bob = usage
    client.force_login(alice)
    response = client.get(PAGE)
    assert lines(response) == [
        ("2026-02", "alice", "-cluster", 1800),
        ("2026-02", "alice", "cluster-a", 7200),
        ("2026-01", "alice", "cluster-a", 3600),
    ]
    assert response.context["report"].gpu_seconds == 12600
    page = response.content.decode()
    assert "Your own cases' lines." in page and "bob" not in page and "(none)" not in page
    assert rows_of(client.get(CSV))[1:] == [
        ["alice", "'-cluster", "2026-02", "1800", "0.5000"],
        ["alice", "cluster-a", "2026-02", "7200", "2.0000"],
        ["alice", "cluster-a", "2026-01", "3600", "1.0000"],
    ]


def test_the_csv_holds_the_pages_lines_quoted_and_defused(operator, usage):
    response = operator.get(CSV)
    assert response["Content-Disposition"] == 'attachment; filename="gpu-accounting.csv"'
    raw = response.content.decode()
    assert '"\'=HYPERLINK(""http://x.example"",""a, b"")"' in raw, "csv quoting, and a quote before the ="
    rows = rows_of(response)
    assert rows[0] == ["owner", "host", "month", "gpu_seconds", "gpu_hours"]
    assert rows[1:] == [
        ["(none)", "cluster-a", "2026-03", "900", "0.2500"],
        ["alice", "'-cluster", "2026-02", "1800", "0.5000"],
        ["alice", "cluster-a", "2026-02", "7200", "2.0000"],
        ["bob", "cluster-a", "2026-02", "36000", "10.0000"],
        ['\'=HYPERLINK("http://x.example","a, b")', "'-cluster", "2026-01", "60", "0.0167"],
        ["alice", "cluster-a", "2026-01", "3600", "1.0000"],
    ]
    assert [row[:3] for row in rows[1:]] == [
        [o if not o.startswith(("=", "-")) else "'" + o, h if not h.startswith("-") else "'" + h, m]
        for m, o, h, _s in lines(operator.get(PAGE))
    ], "the same lines as the page"


def test_a_month_range_narrows_page_and_csv_and_a_bad_bound_is_left_out_with_why(operator, usage):
    response = operator.get(PAGE, {"from": "2026-02", "to": "2026-02"})
    assert [line[1] for line in lines(response)] == ["alice", "alice", "bob"]
    assert {line[0] for line in lines(response)} == {"2026-02"}
    assert f'href="{CSV}?from=2026-02&amp;to=2026-02"' in response.content.decode()
    narrowed = operator.get(CSV, {"from": "2026-02", "to": "2026-02"})
    assert narrowed["Content-Disposition"] == 'attachment; filename="gpu-accounting-2026-02-2026-02.csv"'
    assert [row[2] for row in rows_of(narrowed)[1:]] == ["2026-02"] * 3

    response = operator.get(PAGE, {"from": "2026-13", "to": "<script>" * 10})
    assert len(lines(response)) == 6, "bad bounds are left out"
    page = response.content.decode()
    assert "from: &#x27;2026-13&#x27; is no month (YYYY-MM); left out" in page
    assert "<script>" not in page and "to: &#x27;&lt;script&gt;&lt;script&gt;&lt;scr" in page


def test_the_page_needs_staff_who_see_cases(client, usage):
    nobody = user_with("nobody", ["resources.view_hpchost"])  # staff, but sees no case
    client.force_login(nobody)
    assert client.get(PAGE).status_code == 403 and client.get(CSV).status_code == 403
    assert "GPU accounting" not in client.get(reverse("admin:index")).content.decode()
    client.force_login(User.objects.create_user("outsider", password="pw"))  # not staff
    for url in (PAGE, CSV):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_the_admin_index_links_to_the_page(operator, client, usage):
    alice, _bob = usage
    for user in (None, alice):
        if user is not None:
            client.force_login(user)
        index = client.get(reverse("admin:index")).content.decode()
        assert f'<a href="{PAGE}">GPU accounting</a>' in index


def test_a_cases_page_shows_each_attempts_gpu_time(admin_client):
    group = make_group(devices="0,1")
    case = make_case(CaseStatus.FAILED, gpu_group=None)
    now = timezone.now()
    Attempt.objects.create(
        case=case, token="t1", remote_dir="/d/t1", gpu_group=group, started_at=now, ended_at=now, gpu_seconds=9000
    )
    Attempt.objects.create(case=case, token="t2", remote_dir="/d/t2", gpu_group=group, started_at=now)
    page = admin_client.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    cells = re.findall(r'<td class="mqic-nowrap mqic-gpu-time">(.*?)</td>', page, re.S)
    assert len(cells) == 2 and "9000 GPU seconds" in cells[0] and ">2.50 GPU h</span>" in cells[0]
    assert cells[1] == "-", "an attempt not ended yet has recorded nothing"
