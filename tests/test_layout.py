"""The shape the README promises, checked on the source itself.

Apps import only downward (the README's "How the code is laid out"): ``resources`` is the remote
world and knows nothing of cases or the console, ``cases`` knows nothing of the console, the project
package imports no app but in its URLs (its admin helpers sit below the apps, which import them),
and none of them imports the demo's sandbox or the tests.
And the project stands on its own: no tracked file names a folder of the machine it was written on.
"""

import ast
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import REPO

OUTSIDE = {"sandbox", "tests"}
BELOW = {
    "resources": {"cases", "console", "mqic_site"} | OUTSIDE,
    "cases": {"console", "mqic_site"} | OUTSIDE,
    "console": {"mqic_site"} | OUTSIDE,
    "mqic_site": {"resources", "cases", "console"} | OUTSIDE,
}
"""Each package, and the top-level packages it must not import."""

MAY_IMPORT_APPS = {Path("mqic_site/urls.py")}
SHARED_BELOW = {"mqic_site.admin_ui"}
"""What every app may import of the project package: the admin helpers, which import no app."""


def imported_packages(path: Path) -> set[str]:
    """The top-level packages ``path`` imports, but for the shared helpers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return {module.split(".")[0] for module in modules - SHARED_BELOW}


@pytest.mark.parametrize("package", sorted(BELOW))
def test_no_package_imports_upward(package):
    wrong = {}
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative in MAY_IMPORT_APPS:
            continue
        if upward := imported_packages(path) & BELOW[package]:
            wrong[str(relative)] = sorted(upward)
    assert wrong == {}


def test_no_tracked_file_names_a_folder_of_this_machine():
    """Where a developer's own paths would come from: the checkout itself, the folder beside it that
    ``.ci/run`` takes real pueue from (cited by relative path only), and the home folder."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    outside = {f"{REPO}/", f"{REPO.parent}/shared/", f"{Path.home()}/"} - {"//"}
    found = []
    for name in tracked.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        text = path.read_bytes().decode(errors="replace")
        found += [f"{name}: {prefix}" for prefix in outside if prefix in text]
    assert found == []


@pytest.mark.parametrize("package", ["resources", "cases"])
def test_apps_point_at_pages_above_them_only_through_a_guarded_link(package):
    """A page of the console is linked with ``admin_ui.link`` (plain text without the console),
    never reversed outright: an app works without the apps above it."""
    wrong = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / package).rglob("*.py"))
        if 'reverse("console:' in path.read_text()
    ]
    assert wrong == []
