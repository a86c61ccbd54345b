"""The generated Protobuf module is exactly what ``make proto`` makes from client.proto.

client_pb2.py is committed (the server needs only the ``protobuf`` runtime); this test
regenerates it with the pinned grpcio-tools of the test extras and compares, so the
schema and the module cannot drift apart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PROTO = "pushgate/protocol/centrifugo/client.proto"
GENERATED = "pushgate/protocol/centrifugo/client_pb2.py"
#: its types, for mypy (protoc --pyi_out)
STUB = "pushgate/protocol/centrifugo/client_pb2.pyi"


def test_client_pb2_is_generated_from_client_proto(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            PROTO,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    fresh = (tmp_path / GENERATED).read_text()
    assert fresh == (ROOT / GENERATED).read_text(), "run `make proto` and commit the result"
    assert (tmp_path / STUB).read_text() == (ROOT / STUB).read_text(), (
        "run `make proto` and commit the result"
    )


def test_the_makefile_target_runs_that_command():
    makefile = (ROOT / "Makefile").read_text()
    assert f"PROTO := {PROTO}" in makefile
    assert "-m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(PROTO)" in makefile
