"""Structured logs: JSON lines and logfmt carry the fields operators search by."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from pushgate.logs import JsonFormatter, LogfmtFormatter, TextFormatter


def record(**extra) -> logging.LogRecord:
    rec = logging.LogRecord(
        "pushgate.hub", logging.INFO, __file__, 1, "disconnect: %s", ("slow",), None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_message_and_fields():
    line = JsonFormatter().format(record(client="c1", user="alice", code=3008, token="SECRET"))
    entry = json.loads(line)
    assert entry["message"] == "disconnect: slow"
    assert (entry["client"], entry["user"], entry["code"], entry["level"]) == (
        "c1",
        "alice",
        3008,
        "info",
    )
    assert "SECRET" not in line  # only named fields are printed


def test_logfmt_quotes_what_needs_quoting():
    line = LogfmtFormatter().format(record(user="al ice", channel="board:1"))
    assert (
        'msg="disconnect: slow"' in line and 'user="al ice"' in line and "channel=board:1" in line
    )


def test_text_appends_fields():
    assert TextFormatter().format(record(user="bob")).endswith("user=bob")


def test_serve_logs_json_without_secrets(tmp_path):
    config = tmp_path / "p.toml"
    config.write_text(
        '[token]\nhmac_secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"\n[api]\nkey = "k3y"\n'
        '[server]\nlog_format = "json"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushgate", "serve", "--config", str(config), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
        while "started" not in first:
            first = proc.stderr.readline()
            assert first, "server exited"
        entry = json.loads(first)
        assert entry["logger"] == "pushgate.server" and "started" in entry["message"]
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=15)[1]
    assert "s3cr3t" not in first + rest and "k3y" not in first + rest
