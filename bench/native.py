"""The native load client (bench/wsload.c), built on demand with gcc.

``native_client()`` returns the path of ``bench/.build/wsload-native``, compiling it
first when it is missing or older than its source. It takes the flags and stdin commands
of bench/wsload.py and prints the same JSON lines, at a small fraction of its CPU per
delivery (bench/run.py ``LoadClient(native=True)``; the ``cluster`` scenario uses it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.common import ROOT

SOURCE = ROOT / "bench" / "wsload.c"
BINARY = ROOT / "bench" / ".build" / "wsload-native"


class NativeBuildError(RuntimeError):
    pass


def native_client() -> Path:
    """The built client; compiled if missing or older than bench/wsload.c."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    gcc = shutil.which("gcc")
    if gcc is None:
        raise NativeBuildError(
            "the native load client needs gcc (apt-get install gcc), "
            "or use the Python one (--cluster-client python)"
        )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    partial = BINARY.with_suffix(".tmp")
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise NativeBuildError(f"gcc failed on {SOURCE}:\n{result.stderr}")
    partial.replace(BINARY)  # atomic: a concurrent run never sees half a binary
    return BINARY


if __name__ == "__main__":
    print(native_client())
