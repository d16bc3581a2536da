"""rosbag2 input and output through ``rosbags`` (no ROS installation needed).

One place for: the distro -> (metadata version, typestore) mapping, QoS profiles
(``/tf_static`` needs transient-local durability to replay), writing a bag into a
temporary directory that appears under its final name only when complete, and
reading bags with errors that name the bag and what is wrong with it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

import yaml
from rosbags.interfaces import (
    Connection,
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import (
    CompressionFormat,
    CompressionMode,
    Reader,
    ReaderError,
    StoragePlugin,
    Writer,
    WriterError,
)
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from oe_depth_ros.atomic import atomic_path

if TYPE_CHECKING:
    from rosbags.interfaces.typing import Typesdict
    from rosbags.typesys.store import Typestore

__all__ = [
    "BagError",
    "DISTROS",
    "STORAGES",
    "DEFAULT_QOS",
    "TRANSIENT_LOCAL_QOS",
    "typestore_for",
    "atomic_bag",
    "BagWriter",
    "BagReader",
]

LOG = logging.getLogger(__name__)


class BagError(ValueError):
    """A bag cannot be read or written (the text names the bag and the problem)."""


class Distro(NamedTuple):
    """What a ROS 2 distribution needs from a bag: metadata version and message types."""

    version: int
    store: Stores


#: Humble reads metadata version 8 at most; Jazzy writes version 9.
DISTROS: dict[str, Distro] = {
    "humble": Distro(8, Stores.ROS2_HUMBLE),
    "jazzy": Distro(9, Stores.ROS2_JAZZY),
}

#: Storage plugin names as ``ros2 bag`` spells them.
STORAGES: dict[str, StoragePlugin] = {
    "mcap": StoragePlugin.MCAP,
    "sqlite3": StoragePlugin.SQLITE3,
}

_ZERO = QosTime(0, 0)

#: What a default rclpy publisher offers: reliable, volatile, keep last 10.
DEFAULT_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                  _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)

#: The static-transform broadcaster's profile: late joiners still get ``/tf_static``.
TRANSIENT_LOCAL_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE,
                          QosDurability.TRANSIENT_LOCAL, _ZERO, _ZERO, QosLiveliness.AUTOMATIC,
                          _ZERO, False)

# What a damaged storage file raises inside rosbags and its storage back-ends.
_STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError, sqlite3.Error, struct.error, EOFError, KeyError, IndexError, ValueError,
    AssertionError, UnicodeDecodeError, OSError,
)


def _check_choice(value: str, choices: Iterable[str], what: str) -> str:
    options = sorted(choices)
    if value not in options:
        raise BagError(f"unknown {what} {value!r}; choose one of {', '.join(options)}")
    return value


def typestore_for(distro: str) -> "Typestore":
    """The rosbags typestore of ``distro`` (``humble`` or ``jazzy``)."""
    return get_typestore(DISTROS[_check_choice(distro, DISTROS, "ROS distro")].store)


@contextlib.contextmanager
def atomic_bag(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield the path at which to create the bag; it becomes ``out`` only on success.

    The bag is built as ``<staging>/<out name>`` in a hidden staging folder next to
    ``out`` (so that its storage file is named after ``out``, as rosbags names it after
    the bag folder), then moved into place with :func:`oe_depth_ros.atomic.atomic_path`.
    Refuses an existing ``out`` unless ``overwrite``; on any failure nothing is left
    behind and an existing ``out`` is untouched.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BagError(f"{out} exists already; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise BagError(f"{out} exists and is not a bag directory; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".staging", dir=out.parent))
    try:
        with atomic_path(out) as tmp:
            yield staging / out.name
            os.replace(staging / out.name, tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class BagWriter:
    """Serialize messages into a new rosbag2 (use as a context manager).

    ``compress`` writes zstd-compressed MCAP chunks (mcap) or messages (sqlite3), both
    readable by ``ros2 bag`` on Humble and Jazzy.

    Connections are created on first use of a topic; their QoS profile lands in
    the bag's ``offered_qos_profiles`` (metadata.yaml and, for MCAP, channel metadata).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", distro: str = "jazzy",
                 compress: bool = False) -> None:
        self.path = Path(path)
        self.storage = _check_choice(storage, STORAGES, "storage plugin")
        self.distro = _check_choice(distro, DISTROS, "ROS distro")
        self.typestore = typestore_for(distro)
        self._writer = Writer(self.path, version=DISTROS[distro].version,  # type: ignore[arg-type]
                              storage_plugin=STORAGES[storage])
        if compress:
            # zstd as ros2 bag does it: MCAP compresses its chunks, sqlite3 each message.
            mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._writer.__exit__(exc_type, exc, tb)
        except WriterError as err:
            raise BagError(f"cannot finish bag {self.path}: {err}") from err

    def add_topic(self, topic: str, msgtype: str, qos: Qos = DEFAULT_QOS) -> Connection:
        """Create the connection for ``topic`` (once) with the typestore's definition."""
        if topic in self._connections:
            conn = self._connections[topic]
            if conn.msgtype != msgtype:
                raise BagError(f"{self.path}: topic {topic} already has type {conn.msgtype}, "
                               f"cannot also write {msgtype}")
            return conn
        if msgtype not in self.typestore.types:
            raise BagError(f"the {self.distro} typestore has no message type {msgtype}")
        conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                           offered_qos_profiles=[qos])
        self._connections[topic] = conn
        self.counts[topic] = 0
        return conn

    def add_raw_topic(self, source: Connection) -> Connection:
        """Create a connection that copies ``source`` (type, definition, hash and QoS)."""
        qos = list(getattr(source.ext, "offered_qos_profiles", []))
        has_def = source.msgdef.format != MessageDefinitionFormat.NONE and source.msgdef.data
        if not (has_def and source.digest) and source.msgtype not in self.typestore.types:
            raise BagError(f"cannot copy {source.topic}: type {source.msgtype} has no "
                           f"definition in the input bag or the {self.distro} typestore")
        try:
            if has_def and source.digest:
                conn = self._writer.add_connection(source.topic, source.msgtype,
                                                   msgdef=source.msgdef.data,
                                                   rihs01=source.digest, offered_qos_profiles=qos)
            else:
                conn = self._writer.add_connection(source.topic, source.msgtype,
                                                   typestore=self.typestore,
                                                   offered_qos_profiles=qos)
        except WriterError as exc:
            raise BagError(f"{self.path}: cannot copy {source.topic}: {exc}") from exc
        self.counts.setdefault(source.topic, 0)
        return conn

    def write(self, topic: str, stamp_ns: int, msg: object, qos: Qos = DEFAULT_QOS) -> None:
        """Serialize ``msg`` (a rosbags dataclass) and write it on ``topic`` at ``stamp_ns``."""
        msgtype = getattr(msg, "__msgtype__", None)
        if not isinstance(msgtype, str):
            raise BagError(f"{self.path}: cannot write {type(msg).__name__} on {topic}: not a "
                           "rosbags message")
        conn = self.add_topic(topic, msgtype, qos)
        self.write_raw(conn, stamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def write_raw(self, conn: Connection, stamp_ns: int, data: bytes | memoryview) -> None:
        """Write already serialized CDR bytes on ``conn``."""
        self._writer.write(conn, int(stamp_ns), data)
        self.counts[conn.topic] += 1


def _typestore_with(base: "Typestore", connections: Iterable[Connection]) -> "Typestore":
    """``base`` plus the definitions a bag carries for types ``base`` lacks."""
    extra: "Typesdict" = {}
    for conn in connections:
        if conn.msgtype in base.types or conn.msgtype in extra:
            continue
        if conn.msgdef.format == MessageDefinitionFormat.MSG and conn.msgdef.data:
            extra.update(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        elif conn.msgdef.format == MessageDefinitionFormat.IDL and conn.msgdef.data:
            extra.update(get_types_from_idl(conn.msgdef.data))
    if extra:
        base.register(extra)
    return base


@dataclass
class BagInfo:
    """What metadata.yaml says about a bag's format."""

    version: int
    storage: str
    distro: str


class BagReader:
    """Read a rosbag2 (use as a context manager); every storage error names the bag.

    ``typestore`` follows the bag's metadata version (9 -> Jazzy, else Humble) and
    is completed with the definitions stored in the bag for other types.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        self.info = self._read_info()
        self._reader: Reader | None = None
        self.typestore: "Typestore | None" = None

    def _read_info(self) -> BagInfo:
        meta = self.path / "metadata.yaml"
        if not self.path.is_dir() or not meta.is_file():
            raise BagError(f"{self.path} is not a rosbag2 directory (no metadata.yaml)")
        try:
            info = yaml.safe_load(meta.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
            version = int(info["version"])
            storage = str(info["storage_identifier"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise BagError(f"{meta}: not a valid rosbag2 metadata file ({exc})") from exc
        return BagInfo(version, storage, "jazzy" if version >= 9 else "humble")

    def __enter__(self) -> "BagReader":
        try:
            reader = Reader(self.path)
            reader.open()
        except _STORAGE_ERRORS as exc:
            raise BagError(f"cannot open bag {self.path} ({self.info.storage}): "
                           f"{type(exc).__name__}: {exc} (is the bag truncated, e.g. by an "
                           f"interrupted recording, or corrupt?)") from exc
        self._reader = reader
        self.typestore = _typestore_with(typestore_for(self.info.distro), reader.connections)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._reader is not None:
            with contextlib.suppress(*_STORAGE_ERRORS):
                self._reader.close()
            self._reader = None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader

    @property
    def connections(self) -> list[Connection]:
        return list(self.reader.connections)

    def topics(self) -> dict[str, str]:
        """Topic name -> message type."""
        return {c.topic: c.msgtype for c in self.reader.connections}

    def message_count(self, topic: str) -> int:
        """Messages on ``topic`` according to the bag's index."""
        return sum(c.msgcount for c in self.reader.connections if c.topic == topic)

    def messages(self, topics: Iterable[str] | None = None,
                 ) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, bag timestamp ns, CDR bytes) in time order; all topics if None."""
        wanted = None if topics is None else set(topics)
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        iterator = self.reader.messages(connections=conns)
        count = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except _STORAGE_ERRORS as exc:
                raise BagError(f"bag {self.path} is damaged (truncated or corrupt?): reading "
                               f"failed after {count} messages: {type(exc).__name__}: {exc}"
                               ) from exc
            count += 1
            yield item

    def deserialize(self, data: bytes | memoryview, conn: Connection, stamp_ns: int) -> Any:
        """CDR bytes of ``conn`` -> rosbags message; corrupt data raises :class:`BagError`."""
        if self.typestore is None:
            raise BagError(f"bag {self.path} is not open: use it in a with statement")
        try:
            return self.typestore.deserialize_cdr(data, conn.msgtype)
        except _STORAGE_ERRORS as exc:
            raise BagError(f"bag {self.path}: message on {conn.topic} at {stamp_ns} ns cannot "
                           f"be decoded as {conn.msgtype}: {type(exc).__name__}: {exc}") from exc
