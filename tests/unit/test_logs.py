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


FORGED = "x\n2026-01-01 00:00:00,000 WARNING pushgate.admin: FORGED\r\u2028y"


def forged_record(**extra) -> logging.LogRecord:
    rec = logging.LogRecord(
        "pushgate.api", logging.INFO, __file__, 1, "API %s refused", (FORGED,), None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_no_format_lets_a_client_string_forge_a_line():
    for formatter in (TextFormatter(), LogfmtFormatter(), JsonFormatter()):
        line = formatter.format(forged_record(user=FORGED))
        assert line.splitlines() == [line], (type(formatter).__name__, line)
        assert "\u2028" not in line and "\r" not in line
    text = TextFormatter().format(forged_record())
    assert "API x\\n2026-01-01" in text  # written as an escape, still readable
    entry = json.loads(JsonFormatter().format(forged_record()))
    assert entry["message"] == f"API {FORGED} refused"  # JSON keeps the exact text


def test_tracebacks_still_span_lines():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord(
            "pushgate", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "Traceback" in TextFormatter().format(rec).splitlines()[1]


async def test_an_api_method_name_cannot_forge_a_log_line(server):
    import io

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("pushgate")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        forged = "x%0A2026-01-01 00:00:00,000 WARNING pushgate.admin: FORGED"
        async with server.session.post(server.api_url + "/" + forged, json={}) as response:
            assert response.status in (401, 404)
        async with server.session.post(
            server.api_url + "/" + forged, json={}, headers={"X-API-Key": "wrong"}
        ) as response:
            assert response.status == 401
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = out.getvalue().splitlines()
    assert lines, "the refused calls are logged"
    assert not any(line.startswith("2026-01-01") for line in lines), lines
