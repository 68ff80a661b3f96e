"""Names from the inbox are untrusted text: how they are shown to people.

A file name may hold any byte but `/` and NUL: newlines, ESC sequences that
retitle or clear a terminal, BEL, bidi overrides. Keys keep them (they are
data); every place that shows a key to a person (log lines, tables, `show`)
passes it through `display()`, which escapes them C-style, so a name can
neither forge a log line nor drive the terminal of whoever reads it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder
# or hide text (bidi embeddings/overrides/isolates, zero-width joiners are left alone).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def display(text: object) -> str:
    """`text` with every control or reordering character escaped (\\n, \\x1b, \\u202e)."""
    return _UNSAFE.sub(_escape, str(text))
