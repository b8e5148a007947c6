"""One writer per output folder: a lock that names its holder and cannot go stale.

Two runs writing into one folder interleave checkpoints and models (one reports "written" while the
files on disk are the other's).  ``output_lock`` takes an exclusive ``flock`` on a small file next to
the folder (``.NAME.lock``: beside it, not in it, so commands that replace the folder as a whole keep
it) and writes the holder's pid, host, start time and command line into it; a second run is refused
with those.  The kernel drops a ``flock`` when its process dies, however it dies, so a lock left by a
killed run is simply taken over.  Only the main process of a multi-process run takes it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechdistill.errors import OutputBusyError, OutputError, describe_os_error

log = logging.getLogger(__name__)


def lock_path(out: str | Path) -> Path:
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _command_line() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):  # python -m speechdistill ...
        prog = f"python -m {spec.name.removesuffix('.__main__')}"
    else:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return " ".join([prog, *sys.argv[1:]])


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": _command_line()}


def _read_holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict) -> str:
    if not info:
        return "another process (no details recorded)"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}: "
            f"{info.get('command', '?')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_lock(out: str | Path, what: str = "output folder") -> Iterator[None]:
    """Hold the lock of output folder ``out`` for the duration of the block (main process only).

    Raises OutputBusyError naming the running holder if another live process has it."""
    if not is_main_process():
        yield
        return
    import fcntl

    path = lock_path(out)
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} {out}: {parent} is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {out}: {describe_os_error(e)}") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"{what} {out}: cannot create its lock file ({describe_os_error(e)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{what} {out} is in use by another run ({describe_holder(_read_holder(path))}); wait for it to "
                f"finish or choose another folder"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise OutputError(f"{what} {out}: cannot lock {path} ({describe_os_error(e)})") from None
            # A file system without flock: judge the recorded holder instead.
            info = _read_holder(path)
            if info and info.get("pid") != os.getpid() and (
                info.get("host") != socket.gethostname() or _alive(int(info.get("pid", 0)))
            ):
                os.close(fd)
                raise OutputBusyError(
                    f"{what} {out} is in use by another run ({describe_holder(info)}); if that run is gone, "
                    f"delete {path}"
                ) from None
        # The holder before us may have removed the file between our open and our lock: lock the file
        # that is at the path now.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _read_holder(path)
    if stale and stale.get("pid") != os.getpid():
        log.info("taking over the lock of %s left by an ended run (%s)", out, describe_holder(stale))
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(_holder()) + "\n").encode("utf-8"))
    except OSError:
        pass  # the lock holds without the details; a refused run then says "no details recorded"
    try:
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)
