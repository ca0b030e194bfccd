"""Where a store's files live: a local folder, or object storage (``s3://``, ``gs://``, anything that
``pyarrow.fs.FileSystem.from_uri`` understands, e.g. ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``).

Both are reached through pyarrow's own file systems and differ only in how a finished file is published: in a
local folder it is written beside its place and renamed into it; on object storage, which has no rename, it is
uploaded once under its final key, whole or not at all (readers see the whole object or nothing). Credentials
come from the file system's standard chains (environment, config files, instance roles); messages name the
location by :attr:`StoreLocation.display`, which never holds credentials.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlencode

from pyarrow import fs

from ..errors import AmplitudeFault

#: Names of local files being written (skipped by clean-ups: another process may be writing them).
TEMP_PREFIX = ".tmp-"
#: Listings of one folder before a "no such folder" is believed (see :meth:`StoreLocation._infos`).
LISTINGS = 3
#: Query parameters never shown (pyarrow accepts some of them in S3 URIs).
SECRET_PARAMETERS = ("access_key", "secret_key", "session_token", "token", "password", "credentials")


class StoreError(AmplitudeFault):
    """The store could not be read or written (network, permissions, throttling); nothing partial was kept."""


#: The start of a query: a '?' followed by a parameter's name and '='. A secret holding such a text must be
#: percent-encoded (%3F): it cannot be told from a query, whose values may hold '@'.
QUERY_START = re.compile(r"\?(?=[A-Za-z_][\w.-]*=)")
#: Why ``from_uri`` rejects a URI it cannot parse (its own message quotes the URI and the offending character).
UNPARSABLE = ("it is not a valid URI; percent-encode any '/', '@', ':', '?', '%' or space in its credentials "
              "(e.g. '/' as %2F)")


def _split(uri: str) -> tuple[str, str, str, str | None]:
    """``uri`` as (scheme, user info, host and path, query or None); never fails.

    Secrets are often typed unencoded and may hold '/', '@', ':', '?' or spaces, so the user info is everything
    before the last '@' ahead of the query: a host never holds '@' (a path that does is shown from after it:
    too little is shown, never a secret).
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:
        scheme, rest = "", uri
    query_start = QUERY_START.search(rest)
    at = rest.rfind("@", 0, query_start.start() if query_start else len(rest))
    user_info, rest = rest[:max(at, 0)], rest[at + 1:]
    location, question, query = rest.partition("?")
    return scheme, user_info, location, query if question else None


def _parameters(query: str) -> list[tuple[str, str]]:
    """A query's parameters, split at '&' and at ';' (so ``region=us;secret_key=…`` hides its secret too)."""
    return parse_qsl(query.replace(";", "&"), keep_blank_values=True)


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_PARAMETERS)


def redact(uri: str) -> str:
    """``uri`` without user info or credential parameters (never fails, whatever the URI holds)."""
    scheme, _, location, query = _split(uri)
    shown = f"{scheme}://{location}" if scheme else location
    if query:
        parameters = [(name, "***" if _is_secret(name) else value)
                      for name, value in _parameters(query)]
        shown += f"?{urlencode(parameters, safe=':/*')}" if parameters else ""
    return shown


def scrub(text: str, uri: str) -> str:
    """``text`` (a library's message about ``uri``) with ``uri`` shown redacted and every credential in it hidden."""
    _, user_info, _, query = _split(uri)
    secrets = {user_info, *user_info.split(":", 1)}
    secrets |= {value for name, value in _parameters(query or "") if _is_secret(name)}
    secrets |= {piece for secret in secrets for piece in (unquote(secret), quote(secret, safe=""))}
    parts = [text]
    for whole in (uri, unquote(uri)):
        parts = [piece for part in parts for piece in part.split(whole)]  # the URI itself, not redacted yet
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        parts = [part.replace(secret, "***") for part in parts]
    return redact(uri).join(parts)


def is_uri(where: str | Path) -> bool:
    """True for object storage URIs (``scheme://``); local paths (also ``file://``) are folders."""
    return isinstance(where, str) and "://" in where and not where.startswith("file://")


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file written beside ``path`` and renamed into place once complete; removed if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a local file beside its place and rename it into place: readers see the old or the new content."""
    with atomic_file(path) as handle:
        handle.write(data)


@dataclass(frozen=True)
class FileEntry:
    """A stored file: its path inside the file system, modification time and size."""

    path: str
    mtime_ns: int
    size: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StoreLocation:
    """A folder of a pyarrow file system; ``local`` tells how files are published."""

    filesystem: fs.FileSystem
    root: str
    display: str
    local: bool

    @classmethod
    def open(cls, where: str | Path) -> StoreLocation:
        """A local folder (created) or an object storage URI."""
        if not is_uri(where):
            folder = Path(str(where).removeprefix("file://")).expanduser().absolute()
            folder.mkdir(parents=True, exist_ok=True)
            return cls(fs.LocalFileSystem(), folder.as_posix(), str(folder), True)
        display = redact(where)
        try:
            filesystem, root = fs.FileSystem.from_uri(where)
        except (OSError, ValueError) as exc:  # its message quotes the URI, credentials included
            reason = UNPARSABLE if str(exc).startswith("Cannot parse URI") else scrub(str(exc), where)
            raise StoreError(f"The hour store {display} cannot be opened: {reason}") from None
        return cls(filesystem, root.rstrip("/"), display, False)

    def path(self, *names: str) -> str:
        return "/".join((self.root, *names))

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """File-not-found passes through; any other file system error names this location, never credentials."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"The hour store {self.display} could not be {action}: {exc}") from None

    def _infos(self, selector: fs.FileSelector) -> list[fs.FileInfo]:
        """What a folder holds (nothing when it does not exist).

        pyarrow's local listing with ``allow_not_found`` fails with "Cannot list directory" when the folder is
        created between its failed listing and its check that the folder exists (a sync's first hour of a day,
        while a query lists that day): a folder missing at the first try is listed again.
        """
        for _ in range(LISTINGS - 1):
            with suppress(FileNotFoundError), self._errors("listed"):
                return self.filesystem.get_file_info(selector)
        with self._errors("listed"):
            return self.filesystem.get_file_info(selector)

    def list(self, *names: str) -> dict[str, FileEntry]:
        """Files directly in the sub-folder ``names`` by name (none when it does not exist)."""
        infos = self._infos(fs.FileSelector(self.path(*names), allow_not_found=True))
        return {info.base_name: FileEntry(info.path, info.mtime_ns or 0, info.size or 0)
                for info in infos if info.type == fs.FileType.File}

    def folders(self, *names: str) -> list[str]:
        """Names of the sub-folders of ``names``.

        pyarrow's GCS file system lists a folder's sub-folders only when they have marker objects (it ignores the
        prefixes GCS returns), and the store writes none: there they are read from the paths of the objects below.
        """
        base = self.path(*names)
        implied = self.filesystem.type_name == "gcs"
        infos = self._infos(fs.FileSelector(base, allow_not_found=True, recursive=implied))
        if implied:
            below = (info.path[len(base) + 1:] for info in infos if info.path.startswith(f"{base}/"))
            return sorted({path.split("/", 1)[0] for path in below if "/" in path})
        return [info.base_name for info in infos if info.type == fs.FileType.Directory]

    def read_bytes(self, path: str) -> bytes:
        with self._errors("read"), self.filesystem.open_input_stream(path) as stream:
            return stream.read()

    def _chunks(self, path: str) -> Iterator[bytes]:
        """A stored file's content, 4 MiB at a time."""
        with self._errors("read"), self.filesystem.open_input_stream(path) as stream:
            while chunk := stream.read(1 << 22):
                yield chunk

    def download(self, path: str, target: Path, size: int | None = None) -> None:
        """Copy a stored file to a local path, atomically (a partial copy is never visible, nor left behind).
        ``size``: the size it was listed with; another one means it was replaced since: :class:`FileNotFoundError`,
        and no copy."""
        try:
            with atomic_file(target) as out, closing(self._chunks(path)) as chunks:
                for chunk in chunks:
                    out.write(chunk)
                if size is not None and out.tell() != size:
                    raise FileNotFoundError(path)
        except FileNotFoundError:
            raise
        except OSError as exc:  # the store's own errors are StoreErrors already: this one is local
            raise StoreError(f"A local copy of the hour store {self.display} could not be written in "
                             f"{target.parent}: {exc}") from None

    def publish_bytes(self, path: str, data: bytes) -> None:
        """Make ``data`` the content of ``path`` in one step (on object storage: through a local file, as
        :meth:`publish_file`)."""
        if self.local:
            write_atomically(Path(path), data)
            return
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            self.publish_file(Path(temp), path)
        finally:
            Path(temp).unlink(missing_ok=True)

    def publish_file(self, source: Path, path: str) -> None:
        """Make a finished local file the content of ``path``: renamed locally; on object storage, uploaded whole
        or not at all.

        An upload is one call into pyarrow, which copies the file and completes it without returning to Python:
        no Python exception (Ctrl-C, any error of ours) can stop it halfway. A pyarrow output stream written from
        Python cannot be abandoned: closed by the exception that leaves its ``with`` block, or dropped, it
        completes the upload with what it holds, a partial object under the final key (apache/arrow#40502).
        """
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, path)
            return
        with self._errors("written"):
            fs.copy_files(source.as_posix(), path, source_filesystem=fs.LocalFileSystem(),
                          destination_filesystem=self.filesystem, chunk_size=1 << 22, use_threads=False)
        source.unlink()

    def delete(self, path: str) -> None:
        """Remove a file if it exists."""
        with self._errors("deleted"), suppress(FileNotFoundError):
            self.filesystem.delete_file(path)
