"""Everything that crosses the transfer boundary is hostile input: results coming back
(``untar``) and case folders going out (``manifest`` and ``tarstream``).

Real files, real streams; no Django and nothing outside the standard library in the code
under test, so this module also runs under Debian's Python 3.11.2.
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.remote.download import ORIGIN, read_origin, remove_tree
from resources.remote.local import LocalTransport
from resources.remote.manifest import ScanLimits, UnsafeCaseFolder, scan_folder
from resources.remote.tarstream import write_folders
from resources.remote.untar import CHUNK, MAX_DEPTH, Limits, extract_folders

KB, MB = 1 << 10, 1 << 20
SECRET = b"outside the case folder: must never be sent\n"

# -- building streams -------------------------------------------------------------------------


def header(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "", mode: int = 0o644
) -> bytes:
    """A header for ``name`` as given; a name with a NUL goes in a pax record, where it survives."""
    info = tarfile.TarInfo(name.replace("\0", "") if "\0" in name else name)
    if "\0" in name:
        info.pax_headers = {"path": name}
    info.type, info.size, info.linkname, info.mode, info.mtime = kind, size, linkname, mode, 1_700_000_000
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def member(name: str, data: bytes = b"", **fields) -> bytes:
    return header(name, size=len(data), **fields) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def folder(name: str) -> bytes:
    return header(name, tarfile.DIRTYPE, mode=0o755)


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> bytes:
    return header(name, kind, linkname=target)


END = bytes(2 * tarfile.BLOCKSIZE)


def archive(*parts: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(parts) + END)


def chain_attack(target: str, payload: bytes) -> io.BytesIO:
    """CVE-2025-4517's shape: directories with 247-character names, each reached through a
    one-letter symlink, until a path's real form passes PATH_MAX; a link at the end leads
    back up, ``escape`` leads ``target`` (relative to the destination) out, and a regular
    member is written through it. tarfile's ``data`` filter stops resolving past PATH_MAX
    and lets it all through on Python 3.11.7."""
    long_name, steps, path, parts = "d" * 247, "abcdefghijklmnop", "", []
    for step in steps:
        parts += [folder(f"c/{path}{long_name}"), link(f"c/{path}{step}", long_name)]
        path += long_name + "/"
    deep_link = "/".join(steps) + "/" + "l" * 254
    parts.append(link(f"c/{deep_link}", "../" * len(steps)))
    parts.append(link("c/escape", f"{deep_link}/{target}"))
    parts.append(member("c/escape/pwned.txt", payload))
    return archive(folder("c"), *parts)


# -- looking at what was written ------------------------------------------------------------------


def tree(path: Path) -> dict[str, str]:
    """Every entry below ``path`` -> its kind (files with a digest), read by descriptor so
    that paths past PATH_MAX are seen too."""
    found: dict[str, str] = {}

    def walk(fd: int, prefix: str) -> None:
        with os.scandir(fd) as listing:
            names = [entry.name for entry in listing]
        for name in names:
            st_ = os.stat(name, dir_fd=fd, follow_symlinks=False)
            key = f"{prefix}{name}"
            if stat.S_ISDIR(st_.st_mode):
                found[key] = "dir"
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    walk(child, key + "/")
                finally:
                    os.close(child)
            elif stat.S_ISREG(st_.st_mode):
                data = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    digest = hashlib.sha256(os.read(data, st_.st_size + 1)).hexdigest()[:12]
                finally:
                    os.close(data)
                found[key] = f"file {st_.st_size} {digest}"
            else:
                found[key] = "link" if stat.S_ISLNK(st_.st_mode) else "special"

    root = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(root, "")
    finally:
        os.close(root)
    return found


class World:
    """A destination with neighbours: ``top/a/b/results/dest`` beside ``top/a/b/outside``."""

    def __init__(self, top: Path, names: tuple[str, ...] = ("c",)):
        self.top = top
        self.results = top / "a" / "b" / "results"
        self.dests = {name: self.results / f"dest-{name}" for name in names}
        for dest in self.dests.values():
            dest.mkdir(parents=True)
        (top / "a" / "b" / "outside").mkdir()
        (top / "a" / "b" / "outside" / "secret.txt").write_bytes(SECRET)
        self.before = self.around()

    def around(self) -> dict[str, str]:
        inside = tuple(f"{dest.relative_to(self.top)}/" for dest in self.dests.values())
        return {key: kind for key, kind in tree(self.top).items() if not key.startswith(inside)}

    def extract(self, stream, limits: Limits | None = None):
        extraction = extract_folders(stream, self.dests, limits or Limits())
        assert self.around() == self.before, "something outside the destinations changed"
        for dest in self.dests.values():
            kinds = set(tree(dest).values())
            assert kinds <= {"dir"} | {k for k in kinds if k.startswith("file ")}, kinds
        return extraction


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# -- links and special members are never created -------------------------------------------------------


def test_cve_2025_4517_chain_writes_nothing_outside(world):
    """The file the chain targets is ``outside/pwned.txt``: the old extract_tar (tarfile's
    ``extractall(filter="data")``, which unpacked ``c`` itself into the destination, so
    ``outside`` is three levels up from ``c``) wrote it there on Python 3.11.7."""
    extraction = world.extract(chain_attack("../../../outside", b"owned\n"))

    result = extraction.folders["c"]
    assert result.ok, result.error
    assert not (world.top / "a" / "b" / "outside" / "pwned.txt").exists()
    assert ("c/escape", "symlink") in result.skipped
    assert sum(kind == "symlink" for _name, kind in result.skipped) == 18
    assert (world.dests["c"] / "escape" / "pwned.txt").read_bytes() == b"owned\n"  # a plain folder


def test_absolute_symlink_is_skipped_and_reported(world):
    extraction = world.extract(archive(folder("c"), link("c/passwd", "/etc/passwd"), member("c/ok.txt", b"ok")))

    result = extraction.folders["c"]
    assert (result.ok, result.files, result.skipped) == (True, 1, [("c/passwd", "symlink")])
    assert tree(world.dests["c"]) == {"ok.txt": tree(world.dests["c"])["ok.txt"]}


def test_dotdot_symlink_then_a_member_through_it_stays_inside(world):
    stream = archive(folder("c"), link("c/up", "../../outside"), member("c/up/secret.txt", b"overwritten"))

    result = world.extract(stream).folders["c"]

    assert result.ok and result.skipped == [("c/up", "symlink")]
    assert (world.dests["c"] / "up" / "secret.txt").read_bytes() == b"overwritten"
    assert (world.top / "a" / "b" / "outside" / "secret.txt").read_bytes() == SECRET


@pytest.mark.parametrize("target", ["../../outside/secret.txt", "/etc/passwd"])
def test_hardlink_to_outside_is_skipped(world, target):
    result = world.extract(archive(folder("c"), link("c/hard", target, tarfile.LNKTYPE))).folders["c"]

    assert result.ok and result.skipped == [("c/hard", "hardlink")]
    assert tree(world.dests["c"]) == {}


def test_devices_and_fifos_are_skipped(world):
    stream = archive(
        folder("c"),
        header("c/null", tarfile.CHRTYPE),
        header("c/disk", tarfile.BLKTYPE),
        header("c/pipe", tarfile.FIFOTYPE),
        member("c/after.txt", b"still read"),
    )

    result = world.extract(stream).folders["c"]

    kinds = [("c/null", "character device"), ("c/disk", "block device"), ("c/pipe", "fifo")]
    assert (result.ok, result.skipped, result.files) == (True, kinds, 1)
    assert list(tree(world.dests["c"])) == ["after.txt"]


@pytest.mark.parametrize(
    "name",
    ["c/../../outside/secret.txt", "c/sub/../../escaped.txt", "c/a\0b"],
)
def test_a_name_that_climbs_out_fails_its_folder(world, name):
    result = world.extract(archive(folder("c"), member(name, b"bad"))).folders["c"]

    assert result.reached and "refused" in result.error


@pytest.mark.parametrize("name", ["/abs/olute.txt", "../outside/secret.txt", "./c/x", "", "."])
def test_a_name_under_no_asked_folder_is_ignored_and_counted(world, name):
    extraction = world.extract(archive(folder("c"), member("c/ok.txt", b"ok"), member(name, b"bad")))

    assert extraction.ignored == 1
    assert extraction.folders["c"].ok  # its part ended before the stranger came
    assert list(tree(world.dests["c"])) == ["ok.txt"]


def test_modes_lose_setuid_and_others_write_and_mtimes_are_kept(world):
    stream = archive(
        folder("c"), member("c/run", b"#!/bin/sh\n", mode=0o6777), header("c/d", tarfile.DIRTYPE, mode=0o1777)
    )

    assert world.extract(stream).folders["c"].ok
    assert stat.S_IMODE((world.dests["c"] / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((world.dests["c"] / "d").stat().st_mode) == 0o755
    assert (world.dests["c"] / "run").stat().st_mtime == 1_700_000_000


# -- caps ---------------------------------------------------------------------------------


def test_byte_cap_refuses_the_folder_and_names_the_setting(world):
    stream = archive(folder("c"), member("c/one", b"1" * 600), member("c/two", b"2" * 600))

    result = world.extract(stream, Limits(max_bytes=1000)).folders["c"]

    assert result.error.startswith("results exceed MQIC_RESULT_MAX_BYTES (1000 bytes)")
    assert result.files == 1


def test_member_cap_refuses_the_folder_and_names_the_setting(world):
    files = [member(f"c/f{i}", b"x") for i in range(10)]

    result = world.extract(archive(folder("c"), *files), Limits(max_members=5)).folders["c"]

    assert result.error == "results exceed MQIC_RESULT_MAX_MEMBERS (5 members)"


def test_folders_made_on_the_way_to_a_file_count_toward_the_member_cap(world):
    """``c`` and ``c/x/y/z/f`` are two headers, but five entries once written."""
    stream = archive(folder("c"), member("c/x/y/z/f", b"1"))

    refused = world.extract(stream, Limits(max_members=4)).folders["c"]

    assert refused.error == "results exceed MQIC_RESULT_MAX_MEMBERS (4 members)"
    stream.seek(0)
    assert world.extract(stream, Limits(max_members=5)).folders["c"].ok


def test_a_name_nested_past_max_depth_is_refused_before_any_folder_is_made(world):
    deep = "c/" + "a/" * 3000 + "f"

    result = world.extract(archive(folder("c"), member(deep, b"x")), Limits(max_members=2)).folders["c"]

    assert result.reached and result.error.endswith(f"nested more than {MAX_DEPTH} folders deep (MAX_DEPTH)")
    assert tree(world.dests["c"]) == {}


def test_max_depth_is_the_upload_rule_too_folders_to_it_and_files_in_them(tmp_path):
    """As many folders as ``manifest`` sends, and files in the deepest, come back; one more is refused."""
    world = World(tmp_path, ("ok", "deep"))
    last = "a/" * MAX_DEPTH
    stream = archive(folder("ok"), member(f"ok/{last}f", b"x"), folder("deep"), folder(f"deep/{last}a"))

    results = world.extract(stream).folders

    assert results["ok"].ok and (world.dests["ok"] / last / "f").read_bytes() == b"x"
    assert "nested more than" in results["deep"].error


class Endless:
    """A stream that never ends: ``head`` then zeros, counting what was read of it."""

    def __init__(self, head: bytes):
        self.head, self.read_bytes = head, 0

    def read(self, size: int) -> bytes:
        data = self.head[self.read_bytes : self.read_bytes + size] or bytes(size)
        self.read_bytes += len(data)
        return data


def test_a_1_tb_member_is_refused_at_its_header_without_reading_it(world):
    stream = Endless(folder("a") + member("a/ok.txt", b"ok") + folder("c") + header("c/huge", size=1 << 40))
    world.dests["a"] = world.results / "dest-a"
    world.dests["a"].mkdir()
    world.dests["late"] = world.results / "dest-late"
    world.dests["late"].mkdir()
    world.before = world.around()

    extraction = world.extract(stream)

    assert stream.read_bytes <= 2 * CHUNK  # one buffer's worth, not a terabyte
    assert not extraction.exhausted and "abandoned" in extraction.stopped
    assert extraction.folders["a"].ok
    assert extraction.folders["c"].error.startswith("results exceed MQIC_RESULT_MAX_BYTES")
    assert (extraction.folders["late"].reached, extraction.folders["late"].error[:12]) == (False, "not reached:")


def test_an_over_cap_member_within_reach_is_read_past_and_the_stream_goes_on(tmp_path):
    """Refused data is read past up to one folder's byte cap; only more stops the stream."""
    world = World(tmp_path, ("a", "b"))
    stream = archive(
        folder("a"), member("a/1", b"x" * 1000), member("a/2", b"y" * 1000), folder("b"), member("b/ok", b"ok")
    )

    extraction = world.extract(stream, Limits(max_bytes=1500))

    assert extraction.stopped is None and extraction.exhausted
    assert "MQIC_RESULT_MAX_BYTES" in extraction.folders["a"].error
    assert extraction.folders["b"].ok


# -- several folders in one stream ---------------------------------------------------------------------


def test_one_bad_folder_fails_alone_and_the_others_arrive_whole(tmp_path):
    world = World(tmp_path, ("one", "bad", "three", "gone"))
    stream = archive(
        folder("one"),
        member("one/a.txt", b"first"),
        folder("bad"),
        member("bad/early.txt", b"written, then thrown away by the caller"),
        member("bad/../../outside/secret.txt", b"evil"),
        member("bad/late.txt", b"never written"),
        folder("three"),
        folder("three/sub"),
        member("three/sub/b.txt", b"third"),
    )

    extraction = world.extract(stream)

    results = extraction.folders
    assert results["one"].ok and results["three"].ok
    assert tree(world.dests["one"]) == {"a.txt": tree(world.dests["one"])["a.txt"]}
    assert (world.dests["three"] / "sub" / "b.txt").read_bytes() == b"third"
    assert "climbs out" in results["bad"].error
    assert not (world.dests["bad"] / "late.txt").exists()
    assert (results["gone"].reached, results["gone"].error) == (True, "missing on the host")


def test_a_top_level_symlink_fails_that_folder(tmp_path):
    world = World(tmp_path, ("c", "d"))
    stream = archive(link("c", "/etc"), member("c/passwd", b"x"), folder("d"), member("d/ok", b"ok"))

    results = world.extract(stream).folders

    assert "is a symbolic link on the host" in results["c"].error
    assert tree(world.dests["c"]) == {}
    assert results["d"].ok


def test_members_of_one_folder_in_two_runs_fail_it(tmp_path):
    world = World(tmp_path, ("c", "d"))
    stream = archive(folder("c"), member("c/1", b"1"), folder("d"), member("c/2", b"2"))

    results = world.extract(stream).folders

    assert "two separate runs" in results["c"].error and results["d"].ok


def test_truncated_stream_keeps_finished_folders_and_fails_the_current_one(tmp_path):
    world = World(tmp_path, ("a", "b", "c"))
    whole = folder("a") + member("a/x", b"x") + folder("b") + member("b/y", b"y" * 5000)

    extraction = world.extract(io.BytesIO(whole[:-3000]))

    results = extraction.folders
    assert extraction.exhausted and results["a"].ok
    assert "truncated" in results["b"].error
    assert not results["c"].reached and "truncated" in results["c"].error


@pytest.mark.parametrize("stream", [b"", b"garbage" * 200, bytes(100)])
def test_unreadable_stream_reaches_no_folder(world, stream):
    extraction = world.extract(io.BytesIO(stream))

    assert extraction.stopped and not extraction.folders["c"].reached


def test_garbage_mid_stream_fails_the_folder_being_written_and_stops(tmp_path):
    world = World(tmp_path, ("a", "b", "c"))
    garbage = b"\1" * 512 + bytes(4096)

    extraction = world.extract(io.BytesIO(folder("a") + member("a/x", b"x") + folder("b") + garbage))

    results = extraction.folders
    assert "unreadable tar header" in extraction.stopped and not extraction.exhausted
    assert results["a"].ok and "unreadable tar header" in results["b"].error
    assert not results["c"].reached


def test_a_sparse_member_stops_the_stream(world):
    sparse = tarfile.TarInfo("c/sparse")
    sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "99"}
    raw = sparse.tobuf(tarfile.PAX_FORMAT)

    extraction = world.extract(archive(folder("c"), raw))

    assert "sparse" in extraction.stopped


def test_an_oversized_extended_header_stops_the_stream_before_it_is_read(world):
    huge = tarfile.TarInfo("././@PaxHeader")
    huge.type, huge.size = tarfile.XHDTYPE, 1 << 40
    stream = Endless(folder("c") + huge.tobuf(tarfile.GNU_FORMAT))  # the size in the header itself

    extraction = world.extract(stream)

    assert stream.read_bytes <= 2 * CHUNK
    assert "extended tar header" in extraction.stopped


def test_what_gnu_tar_writes_comes_back_exactly(tmp_path):
    source = tmp_path / "host"
    long_dir = source / "c" / ("long name " * 20) / "ünïcødé ✓"
    long_dir.mkdir(parents=True)
    (long_dir / ("file " * 40)).write_bytes(b"deep")
    (source / "c" / "big.bin").write_bytes(os.urandom(3 * MB))
    (source / "c" / "empty").mkdir()
    (source / "c" / "link").symlink_to("big.bin")
    stream = subprocess.run(
        ["tar", "-c", "-f", "-", "-C", str(source), "--", "c"], capture_output=True, check=True
    )
    world = World(tmp_path / "w")

    result = world.extract(io.BytesIO(stream.stdout)).folders["c"]

    expected = {k: v for k, v in tree(source / "c").items() if v != "link"}
    assert (result.ok, result.skipped, result.files) == (True, [("c/link", "symlink")], 2)
    assert tree(world.dests["c"]) == expected


# -- folders of any depth already on disk: removed and replaced without recursion ---------------------------


def deep_folder(path: Path, levels: int, *, link_to: Path | None = None) -> None:
    """``path/d/d/.../d/f`` ``levels`` folders deep, built by descriptor (no path gets long),
    with a symlink to ``link_to`` at the bottom if given."""
    path.mkdir()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        if link_to is not None:
            os.symlink(link_to, "out", dir_fd=fd)
    finally:
        os.close(fd)


def test_old_results_and_staging_thousands_of_levels_deep_are_removed_and_replaced(deep_tmp):
    """``shutil.rmtree`` raises RecursionError on these (even with ignore_errors), which
    stopped every later download into them; links at the bottom are removed, not followed."""
    world = World(deep_tmp / "w")
    outside = world.top / "a" / "b" / "outside"
    host = deep_tmp / "host"
    (host / "c").mkdir(parents=True)
    (host / "c" / "new.txt").write_text("new")
    dest = world.dests["c"]
    dest.rmdir()
    deep_folder(dest, 3000, link_to=outside)
    deep_folder(dest.with_name(".mqic-7.incoming"), 3000, link_to=outside)  # a crash's leftover

    results = LocalTransport().download_folders(str(host), world.dests, staging_keys={"c": "7"}, limits=Limits())

    assert results["c"].ok, results["c"].error
    assert sorted(tree(dest)) == [ORIGIN, "new.txt"]
    assert sorted(os.listdir(world.results)) == ["dest-c"]  # no staging and no old results left
    assert world.around() == world.before


@pytest.mark.parametrize("kind", ["file", "folder", "link"])
def test_the_origin_of_results_is_written_by_mqic_whatever_the_job_left_under_that_name(deep_tmp, kind):
    """Results at home name the remote folder they came from (a restored database tells by it
    which attempt they belong to); a job's own ``.mqic_origin`` cannot speak for another attempt."""
    world = World(deep_tmp / "w")
    host = deep_tmp / "host"
    (host / "c").mkdir(parents=True)
    forged = host / "c" / ORIGIN
    if kind == "file":
        forged.write_text("mqic_other_1.0123456789abcdef\n")
    elif kind == "folder":
        (forged / "deep").mkdir(parents=True)
    else:
        forged.symlink_to(world.top / "a")

    results = LocalTransport().download_folders(str(host), world.dests, staging_keys={"c": "7"}, limits=Limits())

    assert results["c"].ok, results["c"].error
    assert (world.dests["c"] / ORIGIN).read_text() == "c\n"
    assert read_origin(world.dests["c"]) == "c"
    assert world.around() == world.before


def test_remove_tree_removes_a_link_itself_and_accepts_what_is_not_there(tmp_path):
    target = tmp_path / "target"
    deep_folder(target, 3)
    (tmp_path / "link").symlink_to(target)

    remove_tree(tmp_path / "link")
    remove_tree(tmp_path / "never there")
    remove_tree(tmp_path / "no parent" / "either")

    assert not os.path.lexists(tmp_path / "link") and len(tree(target)) == 4


@pytest.mark.parametrize(
    ("bad", "step"),
    [
        ("bad\0dir/dest", "the local folder could not be prepared"),
        ("bad\0dest", "the downloaded folder could not be put in place"),
    ],
)
def test_an_unexpected_error_for_one_folder_stays_with_it(tmp_path, bad, step):
    """A destination no path can name (a NUL byte) raises ValueError, not OSError, when its
    staging is prepared or when it is swapped in: that folder is refused with the reason and
    the other comes home all the same."""
    host = tmp_path / "host"
    for name in ("bad", "good"):
        (host / name).mkdir(parents=True)
        (host / name / "r.txt").write_text(name)
    routes = {"bad": tmp_path / bad, "good": tmp_path / "good"}

    results = LocalTransport().download_folders(
        str(host), routes, staging_keys={"bad": "1", "good": "2"}, limits=Limits()
    )

    assert results["bad"].reached and results["bad"].error == f"{step}: ValueError: embedded null byte"
    assert results["good"].ok and (tmp_path / "good" / "r.txt").read_text() == "good"
    assert sorted(os.listdir(tmp_path)) == ["good", "host"]  # the refused folder's staging is gone


# -- property: whatever the names and kinds, nothing outside is touched -------------------------------------

components = st.one_of(
    st.sampled_from(["..", ".", "", "c", "outside", "secret.txt", "x" * 255, "y" * 256, "\udcff\udcfe", "ünï ✓"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0/"), min_size=1, max_size=12),
)
names = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from(["c/", "c/../", "/", "../", "", "./c/", "c//", "c/./"]),
    st.lists(components, min_size=0, max_size=5),
)
kinds = st.sampled_from(
    [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
)
members = st.lists(st.tuples(names, kinds, names, st.binary(max_size=300)), max_size=12)


def build(entries) -> io.BytesIO:
    parts = [folder("c")]
    for name, kind, target, data in entries:
        if kind == tarfile.REGTYPE:
            parts.append(member(name, data, mode=0o777))
        else:
            parts.append(header(name, kind, linkname=target))
    return archive(*parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members)
def test_any_names_and_kinds_write_only_files_and_folders_inside(entries):
    with tempfile.TemporaryDirectory() as top:
        world = World(Path(top))

        extraction = world.extract(build(entries), Limits(max_bytes=2 * KB, max_members=8))

        written = tree(world.dests["c"])
        if extraction.folders["c"].ok:
            regular = {below_c(name) for name, kind, _t, _d in entries if kind == tarfile.REGTYPE}
            assert {key for key, kind in written.items() if kind != "dir"} <= regular


def below_c(name: str) -> str | None:
    """Where a member named ``name`` may land below folder ``c``, if anywhere."""
    top, *rest = name.split("/")
    return "/".join(part for part in rest if part not in ("", ".")) if top == "c" else None


safe_parts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0/"), min_size=1, max_size=8
)
safe_files = st.dictionaries(
    st.lists(safe_parts.filter(lambda p: p not in (".", "..")), min_size=1, max_size=3).map("/".join),
    st.binary(max_size=2000),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(safe_files)
def test_plain_files_come_back_byte_for_byte(files):
    with tempfile.TemporaryDirectory() as top:
        world = World(Path(top))
        stream = archive(folder("c"), *(member(f"c/{name}", data) for name, data in files.items()))

        result = world.extract(stream).folders["c"]

        if result.ok:  # a name both a file and a folder's parent refuses the folder instead
            for name, data in files.items():
                assert (world.dests["c"] / name).read_bytes() == data
        else:
            assert "could not" in result.error


# -- uploads: only what was listed leaves, read by descriptor ------------------------------------------------


def case_folder(root: Path) -> Path:
    case = root / "case"
    (case / "sub").mkdir(parents=True)
    (case / "run.sh").write_text("echo ok\n")
    (case / "sub" / "data.txt").write_bytes(b"d" * len(SECRET))
    (root / "outside").mkdir()
    (root / "outside" / "data.txt").write_bytes(SECRET)
    return case


def stream_of(listed) -> tuple[bytes, dict[str, str]]:
    out = io.BytesIO()
    damaged = write_folders(listed, out)
    return out.getvalue(), damaged


def unpack(data: bytes, names: list[str], top: Path) -> dict:
    dests = {name: top / f"back-{name}" for name in names}
    for dest in dests.values():
        dest.mkdir()
    extraction = extract_folders(io.BytesIO(data), dests, Limits())
    assert extraction.exhausted and extraction.stopped is None  # the stream stays a valid tar
    return extraction.folders


def test_a_listed_folder_swapped_for_a_symlink_out_sends_nothing_from_outside(tmp_path):
    case = case_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "fine.txt").write_text("fine")
    listed = [(scan_folder(case, ScanLimits()), "c"), (scan_folder(other, ScanLimits()), "o")]
    (case / "sub").rename(case / "sub.old")
    (case / "sub").symlink_to(tmp_path / "outside")

    data, damaged = stream_of(listed)

    assert SECRET not in data
    assert damaged == {"c": "sub changed while it was being sent"}
    assert unpack(data, ["c", "o"], tmp_path)["o"].ok
    assert (tmp_path / "back-o" / "fine.txt").read_text() == "fine"


def test_the_case_folder_itself_swapped_for_a_symlink_is_damaged(tmp_path):
    case = case_folder(tmp_path)
    listed = [(scan_folder(case, ScanLimits()), "c")]
    case.rename(tmp_path / "moved")
    case.symlink_to(tmp_path / "outside")

    data, damaged = stream_of(listed)

    assert SECRET not in data and damaged == {"c": "the case folder changed while it was being sent"}


def test_a_file_replaced_by_another_of_the_same_size_is_damaged(tmp_path):
    case = case_folder(tmp_path)
    listed = [(scan_folder(case, ScanLimits()), "c")]
    (case / "sub" / "data.txt").unlink()
    os.link(tmp_path / "outside" / "data.txt", case / "sub" / "data.txt")

    data, damaged = stream_of(listed)

    assert SECRET not in data and damaged == {"c": "sub/data.txt changed while it was being sent"}


def test_a_hard_link_to_another_users_file_is_refused_at_the_listing(tmp_path):
    """Where the kernel lets users link files they do not own (``fs.protected_hardlinks=0``), a user
    who owns a case folder could link a file only MQIC may read into it: such a link is refused.
    (Run as root, as the whole suite is: it makes a folder another user's.)"""
    case = case_folder(tmp_path)
    nobody = pwd.getpwnam("nobody").pw_uid
    for path in (case, case / "sub", case / "run.sh", case / "sub" / "data.txt"):
        os.chown(path, nobody, -1)
    os.link(tmp_path / "outside" / "data.txt", case / "sub" / "linked.txt")  # root's file, root's link

    with pytest.raises(UnsafeCaseFolder, match="hard link to a file of another user"):
        scan_folder(case, ScanLimits())
    os.chown(tmp_path / "outside" / "data.txt", nobody, -1)  # the folder owner's own file, linked: fine
    assert "sub/linked.txt" in [e.relative for e in scan_folder(case, ScanLimits()).entries]


@pytest.mark.parametrize(("change", "reason"), [(b"short", "shrank"), (b"x" * 5000, "changed")])
def test_a_file_that_shrinks_or_grows_is_sent_at_its_listed_size(tmp_path, change, reason):
    case = case_folder(tmp_path)
    listed = [(scan_folder(case, ScanLimits()), "c")]
    (case / "sub" / "data.txt").write_bytes(change)  # same inode, new size

    data, damaged = stream_of(listed)

    assert damaged == {"c": f"sub/data.txt {reason} while it was being sent"}
    folders = unpack(data, ["c"], tmp_path)
    assert (tmp_path / "back-c" / "sub" / "data.txt").stat().st_size == len(SECRET)
    assert folders["c"].ok


def test_a_file_swapped_for_a_fifo_neither_hangs_nor_is_sent(tmp_path):
    case = case_folder(tmp_path)
    listed = [(scan_folder(case, ScanLimits()), "c")]
    (case / "run.sh").unlink()
    os.mkfifo(case / "run.sh")

    _data, damaged = stream_of(listed)

    assert damaged == {"c": "run.sh changed while it was being sent"}


def test_case_folders_are_sent_as_the_owners_alone(tmp_path):
    case = case_folder(tmp_path)
    (case / "run.sh").chmod(0o4777)

    data, _ = stream_of([(scan_folder(case, ScanLimits()), "c")])

    with tarfile.open(fileobj=io.BytesIO(data)) as sent:
        modes = {m.name: m.mode for m in sent}
    assert modes["c"] == 0o700 and modes["c/run.sh"] == 0o777


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda case: (case / "leak").symlink_to("../outside/data.txt"), "points outside"),
        (lambda case: (case / "abs").symlink_to(case / "run.sh"), "points outside"),
        (lambda case: ((case / "y").symlink_to("."), (case / "x").symlink_to("y/..")), "points outside"),
        (
            lambda case: ((case / "sub" / "e").symlink_to(".."), (case / "z").symlink_to("sub/e/..")),
            "points outside",
        ),
        (lambda case: ((case / "p").symlink_to("q"), (case / "q").symlink_to("p")), "loop of links"),
        (lambda case: os.mkfifo(case / "pipe"), "special file"),
    ],
)
def test_unsafe_folders_are_refused_when_listed(tmp_path, make, reason):
    case = case_folder(tmp_path)
    make(case)

    with pytest.raises(UnsafeCaseFolder, match=reason):
        scan_folder(case, ScanLimits())


def test_links_that_stay_inside_are_listed(tmp_path):
    case = case_folder(tmp_path)
    (case / "rel").symlink_to("sub/data.txt")
    (case / "sub" / "back").symlink_to("../run.sh")
    (case / "dirlink").symlink_to("sub")

    listed = scan_folder(case, ScanLimits())

    links = {e.relative: e.target for e in listed.entries if e.kind == "link"}
    assert links == {"rel": "sub/data.txt", "sub/back": "../run.sh", "dirlink": "sub"}


@pytest.mark.parametrize(
    ("limits", "setting"),
    [(ScanLimits(max_bytes=10), "MQIC_UPLOAD_MAX_BYTES"), (ScanLimits(max_members=2), "MQIC_UPLOAD_MAX_MEMBERS")],
)
def test_upload_caps_name_their_setting(tmp_path, limits, setting):
    with pytest.raises(UnsafeCaseFolder, match=setting):
        scan_folder(case_folder(tmp_path), limits)


@pytest.mark.parametrize("what", ["a symlink", "a file"])
def test_a_case_path_that_is_not_a_folder_is_refused(tmp_path, what):
    case = case_folder(tmp_path)
    target = tmp_path / "not a folder"
    target.symlink_to(case) if what == "a symlink" else target.write_text("x")

    with pytest.raises(UnsafeCaseFolder, match="cannot be opened as a folder"):
        scan_folder(target, ScanLimits())
