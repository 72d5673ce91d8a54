"""Paths on object storage: ``s3://bucket/key``, ``gs://...``, ``hdfs://...``, ``file:///...``,
opened with pyarrow's filesystems (those Ray Data reads with).

Credentials come from where each filesystem's own client looks: the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``...) and the
usual config files (``~/.aws/credentials``...). A URI that carries them itself
(``s3://KEY:SECRET@bucket``) is refused: URIs are written into records, ``run.json`` and logs.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ..errors import OptionError, first_line


def is_uri(path: Any) -> bool:
    """``scheme://...`` with a scheme of two letters or more (``C:\\`` is a drive)."""
    if not isinstance(path, str):
        return False
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


# query parameters that carry a secret (Azure's client_secret, SAS signatures, tokens)
_SECRET_WORDS = ("secret", "password", "token", "signature", "sig", "key", "credential")


def check_no_credentials(uri: str) -> None:
    """OptionError when ``uri`` carries a secret: ``user:secret@`` before the host (found even
    when the secret holds a ``/``, as AWS secret keys may, which a URL parser takes for the
    path), or a query parameter named like one. A user name alone (``hdfs://user@host``) is
    not a secret."""
    scheme, _, rest = uri.partition("://")
    at = rest.rfind("@")
    userinfo = rest[:at] if at >= 0 else ""
    query = urlsplit(uri).query.lower()
    if ":" in userinfo or any(word in name for name, _, _ in
                              (p.partition("=") for p in query.split("&") if p)
                              for word in _SECRET_WORDS):
        raise OptionError(f"{redacted(uri)}: put credentials in the environment or the "
                          "storage's config files, not in the URI (it is written into the "
                          "records and run.json)")


def redacted(uri: str) -> str:
    """``uri`` without what may be a secret: the part before its last ``@`` and its query
    become ``***``."""
    scheme, sep, rest = uri.partition("://")
    at = rest.rfind("@")
    if at >= 0:
        rest = "***@" + rest[at + 1:]
    if "?" in rest:
        rest = rest.split("?", 1)[0] + "?***"
    return scheme + sep + rest


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) of ``uri``; OptionError for credentials in it, or a
    scheme no filesystem reads."""
    check_no_credentials(uri)
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's "unrecognized filesystem type"...
        raise OptionError(f"{redacted(uri)}: {first_line(exc)}") from None


def unreadable(uri: str) -> str | None:
    """Why the object at ``uri`` cannot be read as an image, in a record's words ("file not
    found", "empty file (0 bytes)"...), from one metadata call; None when it may be read."""
    import pyarrow.fs

    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (OSError, OptionError) as exc:
        return first_line(exc)
    if info.type == pyarrow.fs.FileType.NotFound:
        return "file not found"
    if info.type == pyarrow.fs.FileType.Directory:
        return "is a directory, not an image file"
    if info.type != pyarrow.fs.FileType.File:
        return "not a regular file"
    if info.size == 0:
        return "empty file (0 bytes)"
    return None


def read_bytes(uri: str) -> bytes:
    """The object's bytes; OSError (pyarrow's errors) when it cannot be read."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return bytes(fh.read())


def stamp(uri: str) -> dict[str, int] | None:
    """Size and modification time of the object (what ``--resume`` compares), None when it
    cannot be read."""
    import pyarrow.fs

    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (OSError, OptionError):
        return None
    if info.type != pyarrow.fs.FileType.File:
        return None
    return {"size": int(info.size), "mtime_ns": int(info.mtime_ns or 0)}


def is_folder(uri: str) -> bool:
    """Whether ``uri`` names a prefix with objects under it (a "folder")."""
    import pyarrow.fs

    try:
        fs, path = filesystem(uri)
        return bool(fs.get_file_info(path).type == pyarrow.fs.FileType.Directory)
    except OSError:
        return False


def files_under(uri: str) -> Iterator[str]:
    """Every object under the prefix ``uri``, as URIs, sorted."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    root = path.rstrip("/")
    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    found = sorted(i.path for i in fs.get_file_info(selector)
                   if i.type == pyarrow.fs.FileType.File)
    base = uri.rstrip("/")
    for found_path in found:
        yield base + "/" + found_path[len(root):].lstrip("/")


def joined(uri: str, *names: str) -> str:
    """``uri`` with ``names`` appended as path parts."""
    return uri.rstrip("/") + "/" + posixpath.join(*names)
