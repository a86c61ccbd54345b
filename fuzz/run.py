"""atheris over the targets of fuzz/targets.py, each for a bounded time.

    python -m fuzz.run [--seconds 60] [target ...]

A crash stops the run and leaves ``crash-<hash>`` in fuzz/crashes/; turn it into a
test (tests/unit/test_fuzz_parsers.py has a ``CRASHES`` list) before fixing it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(name: str, seconds: int) -> int:
    """Fuzz one target in a child process (libFuzzer exits the process when done)."""
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, atheris\n"
        "with atheris.instrument_imports():\n"
        "    from fuzz.targets import TARGETS\n"
        f"atheris.Setup(sys.argv, TARGETS[{name!r}])\n"
        "atheris.Fuzz()\n"
    )
    argv = [
        sys.executable,
        "-c",
        code,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{name}-",
        "-max_len=4096",
        str(corpus),
    ]
    print(f"fuzzing {name} for {seconds}s", flush=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    return subprocess.call(argv, cwd=HERE.parent, env=env)


def main() -> int:
    from fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("targets", nargs="*", help=f"of: {', '.join(TARGETS)} (all)")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    failed = [name for name in args.targets or TARGETS if run_one(name, args.seconds) != 0]
    if failed:
        print("crashes in: " + ", ".join(failed), file=sys.stderr)
        return 1
    print("no crash found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
