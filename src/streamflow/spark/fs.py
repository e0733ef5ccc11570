"""Paths of the lake and the month folders: a local directory, or any URI Hadoop's filesystems
read (``s3a://``, ``gs://``, ``abfs://``, ``hdfs://`` — configured through ``spark.hadoop.*`` in
``STREAMFLOW_SPARK_CONF``). Local paths use the operating system; the others go through the
Hadoop ``FileSystem`` of the running Spark session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def is_local(path: str) -> bool:
    """A plain path or a ``file:`` URI."""
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and path[1:3] in (":\\", ":/"))


def local_path(path: str) -> Path:
    return Path(urlparse(path).path) if path.startswith("file:") else Path(path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def spark_uri(path: str) -> str:
    """What to hand Spark: absolute ``file:`` URIs for local paths, other URIs unchanged.

    Not ``Path.as_uri()``: Hadoop's ``Path(String)`` takes its string literally (it never decodes
    percent escapes), so a percent-encoded URI names another directory — ``as_of=2024-01-31``
    would be written as ``as_of%3D2024-01-31``, ``my lake`` as ``my%20lake`` — where the
    operating-system side (``local_path``) does not look."""
    return "file://" + local_path(path).resolve().as_posix() if is_local(path) else path


@dataclass(frozen=True)
class FileStatus:
    exists: bool
    is_file: bool = False
    size: int = 0


class HadoopFS:
    """The few filesystem operations the engine needs, on any Hadoop URI."""

    def __init__(self, spark: SparkSession, uri: str) -> None:
        jvm: Any = spark.sparkContext._jvm
        self._jvm = jvm
        self._path = jvm.org.apache.hadoop.fs.Path(uri)
        self._fs = self._path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def _p(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def status(self, uri: str) -> FileStatus:
        p = self._p(uri)
        if not self._fs.exists(p):
            return FileStatus(exists=False)
        st = self._fs.getFileStatus(p)
        return FileStatus(exists=True, is_file=bool(st.isFile()), size=int(st.getLen()))

    def head(self, uri: str, n: int) -> bytes:
        stream = self._fs.open(self._p(uri))
        try:
            data = self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, min(n, self.status(uri).size))
        finally:
            stream.close()
        return bytes(data)

    def exists(self, uri: str) -> bool:
        return bool(self._fs.exists(self._p(uri)))

    def delete(self, uri: str) -> None:
        self._fs.delete(self._p(uri), True)

    def list_dirs(self, uri: str) -> list[str]:
        p = self._p(uri)
        if not self._fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in self._fs.listStatus(p) if s.isDirectory())
