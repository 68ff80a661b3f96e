"""The only place where a relative key becomes an absolute path, or back.

The database stores keys such as ``cam1/clip.mp4``: relative to a root fixed
at start, always with ``/`` separators. Resolving a key refuses anything that
would leave the root: an absolute key, ``..`` components, or a symlink whose
target lies outside. That one rule is what keeps results reachable after the
home moves, and keeps a hostile file name from writing outside the output.

Names are bytes, keys are text
------------------------------
A Linux file name is any byte sequence without ``/`` and NUL; it need not be
UTF-8 (SMB shares written from old Windows or Latin-1 systems). A key must be
valid Unicode so that every JSON document holding it is valid, so the name's
bytes are spelled losslessly:

* valid UTF-8 stays as it is (newlines, ESC, emoji: keys are data; people see
  them through ``forgesyte.text.display``);
* each byte of an invalid UTF-8 sequence becomes ``\\xHH`` (lower-case hex);
* a literal backslash is doubled only where it would otherwise be read as an
  escape: before another backslash, before ``xHH`` or before ``uHHHH``.

So ``b"caf\\xe9.mp4"`` (Latin-1) is the key ``caf\\xe9.mp4`` and ``C:\\new.mp4``
stays ``C:\\new.mp4``. The reader of a spelling also accepts ``\\xHH`` for any
byte and ``\\uHHHH`` for any code point, which is how ``display()`` shows a
control character; every spelling has one canonical key (`canonical_key`),
and only canonical keys are stored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

# One token of a key spelling: an escaped backslash, a byte, a code point, or a lone backslash.
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})?")
_TOKEN = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4})|.", re.S)
# What a backslash must not be followed by unless doubled (lower-case hex only, like the reader).
_LOOKS_ESCAPED = re.compile(r"x[0-9a-f]{2}|u[0-9a-f]{4}")


class UnsafeKey(ValueError):
    """A key (or path) that would leave its root, or is not a key at all."""


def _char_token(char: str, escape: "re.Pattern[str] | None") -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, from surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (not from a name)
        return f"\\u{code:04x}"
    if escape is not None and escape.match(char):
        return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"
    return char


def _join(tokens: list[str]) -> str:
    """Join tokens, doubling each lone backslash that the reader would take for an escape."""
    out: list[str] = []
    for index, token in enumerate(tokens):
        if token == "\\":
            following = "".join(tokens[index + 1:index + 6])
            if following.startswith("\\") or _LOOKS_ESCAPED.match(following):
                token = "\\\\"
        out.append(token)
    return "".join(out)


def _spell(text: str) -> str:
    """Spell a surrogateescape'd name as its canonical key."""
    return _join([_char_token(char, None) for char in text])


def shown_spelling(text: str, unsafe: "re.Pattern[str]") -> str:
    """`text` (a key, or any text) with the characters `unsafe` matches, and lone
    surrogates, written as escapes; escapes already in it are kept. For a key the
    result is another spelling of the same name: canonical_key() turns it back."""
    return _join([token if len(token) > 1 else _char_token(token, unsafe)
                  for token in _TOKEN.findall(text)])


def key_from_bytes(raw: bytes) -> str:
    """The canonical key spelling of a name (or of a relative path) given as bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _spell(raw.decode("utf-8", "surrogateescape"))
    return _spell(text) if "\\" in text else text


def key_from_name(name: str) -> str:
    """The key of a name as the os module gives it (str, surrogateescape'd)."""
    return key_from_bytes(os.fsencode(name))


def bytes_from_key(spelling: str) -> bytes:
    """The name's bytes. Reads any spelling (canonical or shown); ValueError if none."""
    if "\\" not in spelling:
        try:
            return spelling.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a key holds no lone surrogates") from None
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(spelling):
        try:
            out += spelling[position:match.start()].encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a key holds no lone surrogates") from None
        body = match.group(1)
        if body is None or body == "\\":
            out += b"\\"
        elif body[0] == "x":
            out.append(int(body[1:], 16))
        else:
            code = int(body[1:], 16)
            if 0xD800 <= code <= 0xDFFF:
                raise ValueError("\\u escapes of surrogates spell no character")
            out += chr(code).encode("utf-8")
        position = match.end()
    try:
        out += spelling[position:].encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a key holds no lone surrogates") from None
    return bytes(out)


def name_from_key(key: str) -> str:
    """The str the os module wants for a key (surrogateescape'd bytes)."""
    return os.fsdecode(bytes_from_key(key))


def canonical_key(spelling: str) -> str:
    """The stored form of any spelling of a name (a shown form, or the key itself)."""
    return key_from_bytes(bytes_from_key(spelling))


def key_spellings(ref: str) -> list[str]:
    """What a user's JOB argument may mean, in order: a spelling of a key (as shown by
    `list`, JSON or the log; canonicalised), then the raw bytes of a name (an argument
    typed as $'\\xff.mp4' arrives surrogateescape'd)."""
    found: list[str] = []
    try:
        found.append(canonical_key(ref))
    except ValueError:
        pass
    raw = key_from_name(ref)
    if raw not in found:
        found.append(raw)
    return found


def redact(text: str, *roots: "Root | Path | str") -> str:
    """`text` with absolute paths under `roots` cut to their keys, and any lone surrogate
    spelled out: for error texts that are shown or stored (no absolute path of this
    machine goes into the state, and every stored string is valid Unicode)."""
    text = str(text)
    for root in roots:
        base = root.path if isinstance(root, Root) else Path(os.path.abspath(root))
        for prefix in dict.fromkeys((str(base), os.path.realpath(base))):
            prefix = prefix.rstrip(os.sep)
            if prefix:
                text = text.replace(prefix + os.sep, "")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        text = "".join(_char_token(c, None) for c in text)
    return text


class Root:
    """An absolute directory plus the key <-> path conversions under it."""

    def __init__(self, path: Path | str):
        self.path = Path(os.path.abspath(path))

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    def _real(self) -> str:
        # Recomputed on use: the root may be a mount point that comes and goes.
        return os.path.realpath(self.path)

    def _inside(self, candidate: str) -> bool:
        real_root = self._real()
        real = os.path.realpath(candidate)
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    @staticmethod
    def check_key(key: str) -> PurePosixPath:
        """Refuse anything that is not a canonical relative key; its parts as a path."""
        if not isinstance(key, str) or not key or "\x00" in key:
            raise UnsafeKey(f"{key!r} is not a valid key.")
        if key.startswith("/"):
            raise UnsafeKey(f"Key {key!r} is absolute; keys are relative to their root.")
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafeKey(f"Key {key!r} has an empty, '.' or '..' component.")
        if "\\" in key or not key.isascii():
            try:
                raw = bytes_from_key(key)
            except ValueError:
                raise UnsafeKey(f"Key {key!r} is not a valid key spelling.") from None
            if b"\x00" in raw or key_from_bytes(raw) != key:
                raise UnsafeKey(f"Key {key!r} is not in canonical form.")
        return PurePosixPath(key)

    def path_for(self, key: str) -> Path:
        """Absolute path of `key`; raises UnsafeKey if it would leave the root."""
        self.check_key(key)
        path = self.path / name_from_key(key)
        if not self._inside(str(path)):
            raise UnsafeKey(f"Key {key!r} leads outside its folder through a symlink.")
        return path

    def key_for(self, path: Path | str | bytes) -> str:
        """Relative key of an absolute path under the root; raises UnsafeKey otherwise."""
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = os.path.abspath(path)
        rel = os.path.relpath(path, self.path)
        if rel == "." or rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
            raise UnsafeKey(f"{key_from_name(os.path.basename(path))!r} is not inside its folder.")
        key = key_from_name(rel.replace(os.sep, "/"))
        self.path_for(key)  # symlink escape check
        return key

    def real_path(self) -> str:
        """The root's real path now (for a batch of `stat_key` calls)."""
        return self._real()

    def stat_key(self, key: str, real_root: str | None = None) -> tuple[str, os.stat_result]:
        """`path_for(key)` and the stat of what it leads to, with the same guarantee
        (UnsafeKey if it leads outside the root), for the settle gate, which does this for
        every file it looks at: one O_PATH open (follows links, reads nothing, never blocks
        on a FIFO), the kernel's name for what it opened, fstat, close; a tenth of the cost
        of path_for's two realpath walks. `real_root`: `real_path()`, taken once for a
        batch. OSError as os.stat raises it (a file deleted meanwhile: FileNotFoundError)."""
        o_path = getattr(os, "O_PATH", None)
        if o_path is None:  # not Linux
            path = str(self.path_for(key))
            return path, os.stat(path)
        self.check_key(key)
        path = os.path.join(os.fspath(self.path), name_from_key(key))  # str: no pathlib per file
        fd = os.open(path, o_path | os.O_CLOEXEC)
        try:
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # no /proc here
                real = os.path.realpath(path)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_nlink == 0:
            raise FileNotFoundError(f"{key!r} was deleted")
        root = self._real() if real_root is None else real_root
        if not (real == root or real.startswith(root.rstrip(os.sep) + os.sep)):
            raise UnsafeKey(f"Key {key!r} leads outside its folder through a symlink.")
        return path, st
