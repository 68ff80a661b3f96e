"""The files of CLI -> daemon requests (daemon/mailbox.py sends and serves them).

Requests and replies are state files like any other: a checksummed, versioned
document each (tinystore.py: a header line with format, version, length and
CRC-32, then the JSON body). Here, so that the mailbox that writes them and the
recovery that inspects the requests folder verify them one way.
"""

from __future__ import annotations

from typing import Any

from forgesyte.storage.errors import StateDamaged
from forgesyte.storage.tinystore import decode_document, encode_document

REQUESTS_DIR = "requests"
REQUEST_FORMAT, REPLY_FORMAT, VERSION = "forgesyte-request", "forgesyte-reply", 1


def encode_request(request: dict[str, Any]) -> bytes:
    return encode_document(REQUEST_FORMAT, VERSION, request)


def encode_reply(answer: dict[str, Any]) -> bytes:
    return encode_document(REPLY_FORMAT, VERSION, answer)


def _decode(raw: bytes, name: str, fmt: str) -> dict[str, Any]:
    document = decode_document(raw, name, fmt, VERSION)
    if not isinstance(document, dict):
        raise StateDamaged(name, "is not a JSON object")
    return document


def decode_request(raw: bytes, name: str) -> dict[str, Any]:
    """The verified request; StateDamaged or UnknownFormat (a sentence naming `name`) otherwise."""
    return _decode(raw, name, REQUEST_FORMAT)


def decode_reply(raw: bytes, name: str) -> dict[str, Any]:
    return _decode(raw, name, REPLY_FORMAT)
