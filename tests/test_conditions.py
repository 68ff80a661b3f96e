"""Ongoing conditions are logged when they start, as a reminder, and when they clear;
never once per retry. And no log line holds a raw control character from a name."""

from __future__ import annotations

import logging
import time

from forgesyte import conditions
from forgesyte.conditions import Condition
from forgesyte.daemon.systemd import PLAIN_FORMAT, JournalFormatter
from forgesyte.text import SafeFormatter


def test_logged_once_then_reminded_then_cleared(caplog):
    caplog.set_level(logging.INFO, logger="forgesyte.test")
    published = []
    conditions.publish_to(published.append)
    try:
        disk = Condition("disk", logging.getLogger("forgesyte.test"), remind_every=0.2)
        assert disk.report("the disk is full") is True
        for _ in range(200):  # a loop retrying every tick
            assert disk.report("the disk is full") is False
        assert [r.getMessage() for r in caplog.records] == ["the disk is full"]
        assert published[-1][0]["name"] == "disk" and published[-1][0]["message"] == "the disk is full"
        time.sleep(0.25)
        assert disk.report("the disk is full") is True  # the reminder
        assert caplog.records[-1].getMessage().startswith("still, after")
        assert disk.clear("the disk has room again") is True
        assert disk.clear("the disk has room again") is False
        assert caplog.records[-1].getMessage() == "the disk has room again"
        assert len(caplog.records) == 3
        assert published[-1] == [] and conditions.active() == []
    finally:
        conditions.publish_to(None)


def _record(msg: str, *args, exc=None) -> logging.LogRecord:
    return logging.LogRecord("forgesyte.daemon", logging.INFO, __file__, 1, msg, args, exc)


EVIL = "evil.mp4\n2026-01-01 00:00:00,000 INFO forgesyte.daemon: job FORGED \x1b]0;pwned\x07\u202e"


def test_formatters_escape_names_and_keep_one_line_per_record():
    try:
        raise ValueError(f"cannot open {EVIL}")
    except ValueError as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
    for formatter in (SafeFormatter(PLAIN_FORMAT), JournalFormatter()):
        plain = formatter.format(_record("job %s %s: completed", "01abc", EVIL))
        assert plain.count("\n") == 0
        assert "\x1b" not in plain and "\x07" not in plain and "\u202e" not in plain
        assert "\\x0a2026-01-01" in plain and "\\x1b]0;pwned\\x07\\u202e" in plain
        text = formatter.format(_record("failed", exc=exc_info))
        first, *rest = text.splitlines()
        assert rest and all(line.lstrip("<0123456789>").startswith("    ") for line in rest)
        assert not any(line.lstrip("<0123456789>").startswith("2026-") for line in text.splitlines())
        assert "\x1b" not in text
