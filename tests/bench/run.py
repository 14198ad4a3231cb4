"""``python -m tests.bench.run [--quick] [--only 1,3] [--profile]``: the benchmark of issues 7, 13 and 15.

Sets up its own world (a throw-away SQLite database, a real sshd, sandbox and real pueue daemons
on loopback; scenario 9 runs in a child process on PostgreSQL and Redis), runs the scenarios,
tears the world down, prints the table and writes ``bench-results/bench.json``. It exits
non-zero only when a scenario could not be measured; a missed target is a finding, reported in
the table, not a failure of the command.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import env
from .report import ScenarioResult, notes, table, write_json

SCENARIOS = {
    1: "submit",
    2: "transfer",
    3: "remote_state",
    4: "inbox",
    5: "admin_list",
    6: "latency",
    7: "finish",
    8: "hygiene_state",
    9: "lifecycle",
    10: "far",
    11: "year",
    12: "fair_share",
}
RESULTS = env.REPO / "bench-results"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mqic-bench-"))
    results = []
    try:
        env.setup_django(workdir)
        from resources.remote import ssh
        from tests.support.sshd import SshServer

        with SshServer() as sshd:
            bench = env.Bench(quick=args.quick, workdir=workdir, sshd=sshd)
            try:
                for number in args.only:
                    results.append(run_scenario(number, bench, profile=args.profile))
            finally:
                ssh.close_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    print()
    print(notes(results))
    write_json(results, RESULTS / "bench.json", quick=args.quick)
    print(f"\nwritten: {RESULTS / 'bench.json'}")
    return 1 if any(result.error for result in results) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development (~2 min)")
    parser.add_argument(
        "--only", type=_numbers, default=list(SCENARIOS), help="comma-separated scenario numbers, e.g. 1,3"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also write bench-results/scenario-N.prof (cProfile; slows runs)"
    )
    return parser.parse_args(argv)


def _numbers(text: str) -> list[int]:
    numbers = [int(part) for part in text.split(",") if part.strip()]
    unknown = set(numbers) - set(SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(f"no scenario {sorted(unknown)}; there are {sorted(SCENARIOS)}")
    return numbers


def run_scenario(number: int, bench: env.Bench, *, profile: bool) -> ScenarioResult:
    """Run one scenario on an empty database; its failure is reported and the others still run."""
    module = importlib.import_module(f"{__package__}.{SCENARIOS[number]}")
    result = ScenarioResult(number, module.TITLE)
    print(f"[{number}] {module.TITLE} ...", file=sys.stderr, flush=True)
    env.reset_database()
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    try:
        if profiler:
            profiler.runcall(module.run, bench, result)
        else:
            module.run(bench, result)
    except Exception as error:
        traceback.print_exc()
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    if profiler:
        RESULTS.mkdir(exist_ok=True)
        profiler.dump_stats(RESULTS / f"scenario-{number}.prof")
    print(f"[{number}] done in {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
