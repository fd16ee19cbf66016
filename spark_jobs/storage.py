"""Where the lakehouse and the landing zone live: a local folder or an S3-compatible object store.

One rule for every engine: a root is either a local path or an `s3://bucket/prefix` URI, and the same
URI is written into the configuration whichever engine runs. The object store is reached through the
standard AWS variables, read by each client itself:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION   credentials and region
  AWS_ENDPOINT_URL                                        an S3-compatible server (MinIO, moto, Ceph...)
  AWS_ALLOW_HTTP=true                                     that server speaks plain HTTP (loopback)
Sail and delta-rs (Rust object_store) and pyarrow read these themselves; JVM Spark gets the same
settings as Hadoop S3A options from `hadoop_s3_conf`, with `s3://` mapped to S3A, so a Delta table's
URI is the same on Sail and on JVM Spark.

`LandingPath` is the small part of pathlib that ingest uses (listing a day folder, reading a file),
over pyarrow's filesystem, so the landing zone can be an object store too. Object stores have no
symbolic links, devices or pipes: those checks of a local landing zone have nothing to refuse there.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pyarrow import fs

S3_SCHEMES = ("s3://", "s3a://")


def is_uri(location: str | os.PathLike) -> bool:
    """An object-store URI (scheme://...), not a local path."""
    return "://" in str(location)


def filesystem(location: str | os.PathLike) -> tuple[fs.FileSystem, str]:
    """pyarrow's filesystem and path for a local path or an object-store URI."""
    text = str(location)
    if is_uri(text):
        if text.startswith("s3a://"):  # pyarrow knows the scheme as s3
            text = "s3://" + text[len("s3a://"):]
        return fs.FileSystem.from_uri(text)
    return fs.LocalFileSystem(), str(Path(text).resolve())


def read_bytes(location: str | os.PathLike) -> bytes:
    """A whole file, local or on the object store."""
    if not is_uri(location):
        return Path(location).read_bytes()
    filesystem_, path = filesystem(location)
    with filesystem_.open_input_stream(path) as fh:
        return fh.read()


def write_text(location: str | os.PathLike, text: str) -> None:
    """Write (replace) a small text file, local or on the object store."""
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    filesystem_, path = filesystem(location)
    with filesystem_.open_output_stream(path) as fh:
        fh.write(text.encode())


def remove_tree(location: str | os.PathLike) -> None:
    """Delete a folder and everything under it; a missing folder is fine."""
    filesystem_, path = filesystem(location)
    try:
        filesystem_.delete_dir(path)
    except FileNotFoundError:
        pass


def children(location: str | os.PathLike) -> list[str]:
    """Names of the entries directly under a folder (none if it does not exist)."""
    filesystem_, path = filesystem(location)
    infos = filesystem_.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(PurePosixPath(i.path).name for i in infos)


def upload_tree(local: str | os.PathLike, uri: str) -> None:
    """Copy a local folder's files under an object-store folder (what `aws s3 sync` would do)."""
    filesystem_, path = filesystem(uri)
    fs.copy_files(str(Path(local).resolve()), path, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=filesystem_)


def hadoop_s3_conf(env: dict[str, str] | None = None) -> dict[str, str]:
    """JVM Spark settings for s3:// and s3a:// through Hadoop's S3A connector (the `s3` JARs of
    conf/jars.txt), from the same AWS variables Sail and delta-rs read. Credentials are not copied
    into the configuration: S3A's default provider chain reads AWS_ACCESS_KEY_ID/SECRET itself."""
    env = os.environ if env is None else env
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        # delta-spark's log store for S3 is correct for one writer process at a time, which the CDP's
        # run claim (spark_jobs/runs.py) already guarantees.
        "spark.delta.logStore.s3.impl": "io.delta.storage.S3SingleDriverLogStore",
    }
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        # An S3-compatible server: bucket in the path, not in the host name.
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    return conf


class LandingPath:
    """A file or folder of a landing zone on an object store, with the pathlib calls ingest makes."""

    def __init__(self, uri: str):
        self._uri = uri.rstrip("/")
        self._fs, self._path = filesystem(self._uri)

    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"LandingPath({self._uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, LandingPath) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __truediv__(self, part: str) -> LandingPath:
        return LandingPath(f"{self._uri}/{part}")

    @property
    def name(self) -> str:
        return PurePosixPath(self._path).name

    @property
    def parent(self) -> LandingPath:
        scheme, _, rest = self._uri.partition("://")
        return LandingPath(f"{scheme}://{PurePosixPath(rest).parent}")

    def _info(self) -> fs.FileInfo:
        return self._fs.get_file_info(self._path)

    def exists(self) -> bool:
        return self._info().type != fs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == fs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == fs.FileType.File

    def is_symlink(self) -> bool:  # object stores have no links
        return False

    def resolve(self) -> LandingPath:
        return self

    def is_relative_to(self, other: LandingPath) -> bool:
        return self._uri == other._uri or self._uri.startswith(other._uri + "/")

    def relative_to(self, other: LandingPath) -> PurePosixPath:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self._uri[len(other._uri) + 1:])

    def iterdir(self) -> list[LandingPath]:
        return [self / name for name in children(self._uri)]

    def stat(self) -> os.stat_result:
        size = self._info().size or 0
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, size, 0, 0, 0))

    lstat = stat

    def open(self, mode: str = "rb"):
        if mode != "rb":
            raise ValueError("landing files are read only")
        return self._fs.open_input_file(self._path)

    def read_bytes(self) -> bytes:
        with self.open() as fh:
            return fh.read()


def landing_root(location: str | os.PathLike) -> Path | LandingPath:
    """The landing zone as a path object: a local Path, or a LandingPath on an object store."""
    return LandingPath(str(location)) if is_uri(location) else Path(location)
