"""Expand what a user names on the command line (files, folders, globs, list files) into inputs.

Expansion is lazy (a generator) so a folder of a million images never becomes a list in
memory. Nothing here opens an image: a path that cannot be read (missing, permission denied, a
symlink loop, a folder that cannot be listed) is passed on as it is, so the run records it as a
failed input (``unreadable`` says why) instead of the whole run stopping before it starts.

Every path yielded is a leaf: folders are walked, globs matched and list files read here, all
the way down, so expanding a yielded path again gives the same path back.

Paths are str as Python gives them: on POSIX a file name that is not valid UTF-8 keeps its
bytes as surrogate escapes (``os.fsdecode``), and ``os.fsencode`` gives the bytes back.
"""

from __future__ import annotations

import codecs
import errno
import glob
import io
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import TorchinferError
from ..storage.uris import check_no_credentials, files_under, is_folder, is_uri, joined, read_bytes
from ..storage.uris import unreadable as unreadable_uri
from .video import VIDEO_EXTENSIONS

# Extensions Pillow decodes that people keep photographs in. Folders are filtered by these;
# a file named explicitly is always passed on, whatever its extension.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".jp2", ".j2k", ".jfif", ".avif", ".heic", ".heif", ".tga", ".ico",
})
LIST_FILE_EXTENSIONS = frozenset({".txt", ".lst"})
_INPUT_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS = set("*?[")


def expand_sources(sources: Iterable[str | bytes | os.PathLike],
                   exclude: str | os.PathLike | None = None) -> Iterator[str]:
    """Yield image (and video) paths from files, folders (recursive, sorted), glob patterns and
    list files.

    Folders are walked without entering ``exclude`` (a run's output folder inside its input
    folder must not feed the run its own pictures), and without following symbolic links to
    folders (os.walk's default, kept so that a link loop cannot make a walk endless: a linked
    folder is not walked, a linked file is an input). A folder that cannot be listed is
    yielded itself, in its place, so the run records it. A glob's matches are expanded like
    named sources; a glob that matches nothing, like an empty folder, yields nothing.

    A ``.txt``/``.lst`` file is read as one path per line, UTF-8 (a BOM is skipped; blank
    lines and ``#`` comments too; relative paths are taken relative to the list file); each
    entry is expanded like a named source. A line that is not UTF-8, or a list file naming
    itself, raises TorchinferError naming the file and line.
    """
    # a local folder by its real path; a URI (a run's --out on object storage) as written
    skip = None if exclude is None else os.fspath(exclude) if is_uri(os.fspath(exclude)) \
        else os.path.realpath(exclude)
    for source in sources:
        yield from _expand(os.fsdecode(source), skip, (), pattern=True)


def check_sources(sources: Iterable[str | bytes | os.PathLike]) -> None:
    """Raise TorchinferError for a named list file that is not UTF-8 text before a run starts
    (``expand_sources`` raises the same, but only when it reaches the file; list files named
    inside list files are checked then)."""
    for source in sources:
        text = os.fsdecode(source)
        if _kind(text) != "list":
            continue
        try:
            fh = open(text, "rb")
        except OSError:
            continue  # the run records it as an input that cannot be read
        with fh:
            for _ in _list_entries(fh, text):
                pass


def unreadable(path: str) -> str | None:
    """Why the file at ``path`` cannot be read as an image, in the words of an error record
    ("file not found", "permission denied", "symlink loop", "is a directory...", "empty
    file...", "not a regular file..."), from one ``stat``; None when it may be opened. Opening
    it can still fail (permission denied): ``open_error`` words that."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return open_error(exc, path)
    except ValueError as exc:  # a NUL in the name, from a list file
        return f"invalid path ({exc})"
    if stat.S_ISDIR(st.st_mode):
        try:  # a folder the walk could not list is yielded as a path: say why
            with os.scandir(path):
                return "is a directory, not an image file"
        except OSError as exc:
            return open_error(exc, path)
    if not stat.S_ISREG(st.st_mode):
        # a named pipe would block the run on open; a device may never end
        return f"not a regular file ({_FILE_TYPES.get(stat.S_IFMT(st.st_mode), 'special')})"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


_FILE_TYPES = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def open_error(exc: OSError, path: str) -> str:
    """The error record's words for an OSError met while reading ``path``."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "file not found (a broken symbolic link)" if os.path.islink(path) \
            else "file not found"
    return (exc.strerror or str(exc)).lower()


def shown(path: str) -> str:
    """A path for a message: a name that is not UTF-8 shows its bytes as ``\\xff`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _kind(text: str) -> str:
    """What ``text`` names: "dir", "list" (a list file), "missing" (nothing there) or "other"
    (a file, or a path that cannot be read: passed on as an input so its record says why)."""
    try:
        st = os.stat(text)
    except OSError as exc:
        return "missing" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else "other"
    except ValueError:  # a NUL in the name
        return "other"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode) and _is_list_name(text):
        return "list"
    return "other"


def _is_list_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in LIST_FILE_EXTENSIONS


def _expand(text: str, skip: str | None, lists: tuple[str, ...], *,
            pattern: bool) -> Iterator[str]:
    """``pattern``: a missing path with glob characters is a glob (not for a glob's own
    matches: a broken link named ``*`` would match itself for ever)."""
    if is_uri(text):
        yield from _expand_uri(text, skip, lists)
        return
    kind = _kind(text)
    if kind == "dir":
        yield from _walk_images(text, skip)
    elif kind == "list":
        yield from _read_list_file(text, skip, lists)
    elif kind == "missing" and pattern and _GLOB_CHARS & set(text):
        for match in sorted(glob.iglob(text, recursive=True)):
            yield from _expand(match, skip, lists, pattern=False)
    else:
        yield text  # a file, or a path that cannot be read: an error record downstream


def _walk_images(root: str, skip: str | None) -> Iterator[str]:
    # os.walk with sorted names: deterministic order, and no full listing held in memory
    # beyond one directory at a time. It reports a folder it cannot list to onerror just
    # before moving on, so the failures are yielded at the next step, in walking order.
    if skip is not None and os.path.realpath(root) == skip:
        return
    unlistable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable.append):
        yield from _drain(unlistable, root)
        dirnames[:] = sorted(d for d in dirnames
                             if skip is None or os.path.realpath(os.path.join(dirpath, d)) != skip)
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in _INPUT_EXTENSIONS:
                yield os.path.join(dirpath, name)
    yield from _drain(unlistable, root)


def _drain(errors: list[OSError], root: str) -> Iterator[str]:
    while errors:
        yield os.fsdecode(errors.pop(0).filename or root)


def _expand_uri(uri: str, skip: str | None, lists: tuple[str, ...]) -> Iterator[str]:
    """An object-storage URI: a prefix with objects under it is walked (images and videos,
    sorted), a ``.txt``/``.lst`` object read as a list, anything else passed on as an input
    (read, or recorded as unreadable, by whoever runs it: a Ray worker reads its own)."""
    if is_folder(uri):
        try:
            found = list(files_under(uri))
        except OSError:
            found = [uri]  # cannot be listed: its record says why
        outside = skip.rstrip("/") + "/" if skip is not None and is_uri(skip) else None
        yield from (f for f in found if f == uri or (
            os.path.splitext(f)[1].lower() in _INPUT_EXTENSIONS
            and (outside is None or not f.startswith(outside))))
    elif _is_list_name(uri) and unreadable_uri(uri) is None:
        # its entries are taken as written (below): a URI list never opens another list
        yield from _list_lines(io.BytesIO(read_bytes(uri)), uri, uri.rsplit("/", 1)[0],
                               skip, lists)
    else:
        yield uri


def _read_list_file(list_file: str, skip: str | None, lists: tuple[str, ...]) -> Iterator[str]:
    try:
        fh = open(list_file, "rb")
    except OSError:
        yield list_file  # unreadable: its record says why
        return
    with fh:
        yield from _list_lines(fh, list_file, str(Path(list_file).parent), skip,
                               (*lists, os.path.realpath(list_file)))


def _list_lines(fh: BinaryIO, list_file: str, folder: str, skip: str | None,
                lists: tuple[str, ...]) -> Iterator[str]:
    """The entries of a list file, each expanded; a relative one is relative to ``folder``
    (the list's own: a local folder, or the list object's URI prefix). A URI entry is taken
    as written, one input, without a call to its storage while expanding: whoever runs it
    reads it. One carrying credentials is refused (OptionError), as a named one is."""
    base = Path(folder)
    for number, entry in _list_entries(fh, list_file):
        if is_uri(entry) or is_uri(folder):
            uri = entry if is_uri(entry) else joined(folder, entry)
            check_no_credentials(uri)
            yield uri
            continue
        p = Path(entry)
        path = str(p if p.is_absolute() else base / p)
        if _is_list_name(path) and _kind(path) == "list" and os.path.realpath(path) in lists:
            raise TorchinferError(f"{shown(list_file)}: line {number}: {shown(entry)} is a "
                                  "list file already being read (a loop of list files)")
        yield from _expand(path, skip, lists, pattern=True)


def _list_entries(fh: BinaryIO, list_file: str) -> Iterator[tuple[int, str]]:
    """(line number, entry) for each path in a list file; TorchinferError at a line that is
    not UTF-8 (a path list is text: the bytes of a name cannot be told from a wrong encoding)."""
    for number, raw in enumerate(fh, 1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]  # Windows editors start UTF-8 files with one
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TorchinferError(
                f"{shown(list_file)}: line {number} is not UTF-8 text (byte "
                f"{raw[exc.start:exc.start + 1]!r} at column {exc.start + 1}); save the list "
                "as UTF-8") from None
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield number, entry
