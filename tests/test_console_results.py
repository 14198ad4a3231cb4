"""A case's results page: listed, each file and the whole folder downloadable (streamed), behind
``console.view_results``; nothing is ever served through a link out of the results folder."""

import contextlib
import io
import os
import tarfile

import pytest
from django.conf import settings
from django.urls import reverse

from cases.models import CaseStatus
from cases.services.jobs import JOB_LOG
from resources.remote.untar import MAX_DEPTH
from tests.factories import make_case
from tests.support.users import user_with

S = CaseStatus
pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _static(plain_static):
    """Pages render without collectstatic."""


@pytest.fixture
def reader(client):
    client.force_login(user_with("reader", ["cases.view_case", "cases.view_all_cases", "console.view_results"]))
    return client


@pytest.fixture
def done(mqic_dirs, tmp_path):
    """A completed case whose results came home, with a nested folder, a link out, a fifo and HTML."""
    case = make_case(S.COMPLETED, name="sim 1")
    folder = mqic_dirs.MQIC_RESULTS_DIR / case.name
    (folder / "sub").mkdir(parents=True)
    (folder / "result.txt").write_text("energy = -42.0\n")
    (folder / "sub" / "big.bin").write_bytes(os.urandom(3 << 20))
    (folder / JOB_LOG).write_text("step 1\nstep 2\ndone\n")
    (folder / "page.html").write_text("<script>alert(1)</script>")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the console")
    (folder / "escape").symlink_to(secret)
    (folder / "escape-dir").symlink_to(tmp_path)
    os.mkfifo(folder / "pipe")
    return case


def results_url(case, name="console:results", *args):
    return reverse(name, args=[case.pk, *args])


def reader_folder(case):
    return settings.MQIC_RESULTS_DIR / case.name


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_page_lists_files_with_size_and_time_and_links_only_regular_files(reader, done):
    page = reader.get(results_url(done))
    html = page.content.decode()
    assert page.status_code == 200
    for path in ("result.txt", "sub/big.bin", JOB_LOG, "page.html"):
        assert reverse("console:result_file", args=[done.pk, path]) in html
    assert "3.0\xa0MB" in html  # the size, human-readable
    assert "escape" in html and "link, not served" in html and "other, not served" in html
    assert reverse("console:result_file", args=[done.pk, "escape"]) not in html
    assert results_url(done, "console:results_archive") in html


def test_a_file_is_streamed_as_an_attachment_and_the_job_log_as_plain_text(reader, done):
    big = reader.get(results_url(done, "console:result_file", "sub/big.bin"))
    assert big.status_code == 200 and big.streaming
    assert big["Content-Disposition"].startswith("attachment")
    assert big["Content-Type"] == "application/octet-stream"
    assert body(big) == (reader_folder(done) / "sub" / "big.bin").read_bytes()
    html = reader.get(results_url(done, "console:result_file", "page.html"))
    assert html["Content-Type"] == "application/octet-stream" and html["Content-Disposition"].startswith(
        "attachment"
    )
    log = reader.get(results_url(done, "console:result_file", JOB_LOG))
    assert log["Content-Type"] == "text/plain; charset=utf-8"
    assert log["X-Content-Type-Options"] == "nosniff"
    assert body(log) == b"step 1\nstep 2\ndone\n"
    download = reader.get(results_url(done, "console:result_file", JOB_LOG) + "?download")
    assert download["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "path", ["escape", "escape-dir/secret.txt", "pipe", "../sim 1/result.txt", "sub", "nothing"]
)
def test_links_fifos_folders_and_paths_out_are_never_served(reader, done, path):
    assert reader.get(results_url(done, "console:result_file", path)).status_code == 404


def test_a_link_swapped_in_for_the_case_folder_itself_is_not_followed(reader, done, tmp_path):
    folder = reader_folder(done)
    folder.rename(tmp_path / "moved")
    folder.symlink_to(tmp_path / "moved")
    assert reader.get(results_url(done, "console:result_file", "result.txt")).status_code == 404
    assert "No results of this case are home yet" in reader.get(results_url(done)).content.decode()


def test_the_archive_is_streamed_and_holds_every_regular_file_and_no_link(reader, done):
    response = reader.get(results_url(done, "console:results_archive"))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="case-{done.pk}-sim-1.tar.gz"'
    chunks = list(response.streaming_content)
    assert len(chunks) > 2  # written as it is sent, not built whole first
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as archive:
        members = {m.name: m for m in archive.getmembers()}
        top = f"case-{done.pk}-sim-1"
        assert {f"{top}/result.txt", f"{top}/sub/big.bin", f"{top}/{JOB_LOG}"} <= members.keys()
        assert not any(name.endswith(("escape", "escape-dir", "pipe")) for name in members)
        assert all(m.isfile() or m.isdir() for m in members.values())
        data = archive.extractfile(f"{top}/sub/big.bin").read()
    assert data == (reader_folder(done) / "sub" / "big.bin").read_bytes()


def test_a_case_without_results_says_so(reader, mqic_dirs):
    case = make_case(S.RUNNING)
    assert "No results of this case are home yet" in reader.get(results_url(case)).content.decode()
    assert reader.get(results_url(case, "console:results_archive")).status_code == 404


def test_results_need_their_own_permission(client, done):
    client.force_login(user_with("viewer", ["cases.view_case", "cases.view_all_cases"]))
    for url in (
        results_url(done),
        results_url(done, "console:results_archive"),
        results_url(done, "console:result_file", "result.txt"),
    ):
        assert client.get(url).status_code == 403, url
    assert (
        "Results and job log"
        not in client.get(reverse("admin:cases_case_change", args=[done.pk])).content.decode()
    )
    client.logout()
    response = client.get(results_url(done, "console:result_file", "result.txt"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_a_folder_thousands_of_levels_deep_is_listed_and_archived_to_max_depth(reader, mqic_dirs, deep_tmp):
    """The walk neither recurses nor holds a descriptor per level past ``MAX_DEPTH``: the page
    and the archive come out whole instead of a RecursionError (or running out of descriptors)."""
    case = make_case(S.COMPLETED, name="deep")
    mqic_dirs.MQIC_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(mqic_dirs.MQIC_RESULTS_DIR, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir(case.name, dir_fd=fd)
    for name in [case.name] + ["d"] * 3000:  # by descriptor: no path ever gets long
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
        with contextlib.suppress(FileExistsError):
            os.mkdir("d", dir_fd=fd)
    os.close(fd)
    deepest_entered = "/".join(["d"] * MAX_DEPTH)

    page = reader.get(results_url(case))

    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-path="{deepest_entered}/d"' in html and f'data-path="{deepest_entered}/d/d"' not in html
    assert "Not everything is listed" in html  # the listing says it is not whole
    with tarfile.open(
        fileobj=io.BytesIO(body(reader.get(results_url(case, "console:results_archive"))))
    ) as archive:
        names = archive.getnames()
    assert max(name.count("/") for name in names) == MAX_DEPTH + 1 and len(names) == MAX_DEPTH + 2


def test_a_file_whose_name_is_not_text_is_listed_and_served(reader, mqic_dirs):
    """A job can name a file with any bytes; the page showed a 500 for one that is not UTF-8."""
    case = make_case(S.COMPLETED, name="odd names")
    folder = mqic_dirs.MQIC_RESULTS_DIR / case.name
    folder.mkdir(parents=True)
    raw = os.path.join(os.fsencode(folder), b"caf\xe9\n.txt")
    with open(raw, "wb") as file:
        file.write(b"latin-1 and a newline\n")
    page = reader.get(reverse("console:results", args=[case.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "caf\\xe9\\n.txt" in html, "shown as text, its odd bytes escaped"
    token = next(e.token for e in page.context["listing"].entries)
    assert reverse("console:result_raw", args=[case.pk, token]) in html
    served = reader.get(reverse("console:result_raw", args=[case.pk, token]))
    assert served.status_code == 200 and b"".join(served.streaming_content) == b"latin-1 and a newline\n"
    assert reader.get(reverse("console:result_raw", args=[case.pk, "Li4"])).status_code == 404  # ".."
