"""Names from the inbox are untrusted text: how they are shown to people.

A file name may hold any byte but `/` and NUL: newlines, ESC sequences that
retitle or clear a terminal, BEL, bidi overrides. Keys keep them (they are
data); every place that shows a key to a person (log lines, tables, `show`)
passes it through `display()`, which writes them as escapes: ``\\x0a`` for a
newline, ``\\x1b`` for ESC, ``\\u202e`` for a bidi override. So a name can
neither forge a log line nor drive the terminal of whoever reads it.

The escapes are the key spelling's own (storage/paths.py): what `display()`
shows is another spelling of the same name, so `forgesyte show` finds the job
from what `list` or the log printed, and nothing two names have differs only
in what is hidden.

Log records go through `SafeFormatter`, which does the same to the whole
formatted line; a traceback keeps its line breaks, but each of its lines is
indented and escaped, so it cannot pass for a log line of its own.
"""

from __future__ import annotations

import logging
import re

from forgesyte.storage.paths import shown_spelling

# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder
# or hide text (bidi marks, embeddings, overrides, isolates; line/paragraph separators).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def display(text: object) -> str:
    """`text` with every control or reordering character escaped (\\x0a, \\x1b, \\u202e)."""
    text = str(text)
    if UNSAFE.search(text) is None and (text.isascii() or _SURROGATE.search(text) is None):
        return text
    return shown_spelling(text, UNSAFE)


class SafeFormatter(logging.Formatter):
    """A Formatter whose lines hold no raw control character from a name.

    The formatted record becomes one escaped line; exception and stack text
    follow on lines of their own, each indented by four spaces and escaped.
    """

    def format(self, record: logging.LogRecord) -> str:
        head, tail = self._parts(record)
        return "\n".join([head] + tail)

    def _parts(self, record: logging.LogRecord) -> tuple[str, list[str]]:
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        head = display(super().format(plain))
        extra = ""
        if record.exc_info:
            extra = self.formatException(record.exc_info)
        elif record.exc_text:
            extra = record.exc_text
        if record.stack_info:
            extra = (extra + "\n" if extra else "") + self.formatStack(record.stack_info)
        return head, ["    " + display(line) for line in extra.splitlines()]
