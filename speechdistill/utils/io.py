"""Atomic file writes: a crash mid-write must never leave a half-written checkpoint or report."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechdistill.errors import ModelLoadError, OutputError, SpeechDistillError, describe_os_error

if TYPE_CHECKING:  # torch is imported lazily: data commands should start fast
    import torch

# Write failures the user fixes by freeing space (or raising a limit), not by changing the input.
_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_SPACE_WORDS = ("No space left on device", "File too large", "Disk quota exceeded")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def write_error(e: BaseException, path: str | Path) -> OutputError | None:
    """``e`` (raised while writing ``path``) as an OutputError naming ``path``, or None if it is not an
    I/O failure.  safetensors reports I/O failures as its own SafetensorError, not OSError."""
    if isinstance(e, SpeechDistillError):
        return None
    if isinstance(e, OSError):
        text = describe_os_error(e, path if e.filename is None else None)
        if e.filename is not None and str(path) not in str(e.filename):
            text = f"cannot write {path}: {text}"
        space = e.errno in _SPACE_ERRNOS
    elif type(e).__name__ == "SafetensorError" and "I/O error" in str(e):
        text = f"{path}: {str(e).split('I/O error: ', 1)[-1]}"
        space = any(w in str(e) for w in _SPACE_WORDS)
    else:
        return None
    if space:
        text += " (free some space, or choose another output folder)"
    return OutputError(text)


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise I/O failures inside the block as an OutputError naming ``path``."""
    try:
        yield
    except Exception as e:
        err = write_error(e, path)
        if err is None:
            raise
        raise err from e


def ensure_dir(path: str | Path, what: str = "output folder") -> Path:
    """``mkdir -p path``, with a clear error when ``path`` (or a parent) is a file or unwritable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder; choose another path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} {path}: {parent} is a file, not a folder")
            break
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _tmp_path(path: Path) -> Path:
    # mkstemp: a unique name, so concurrent writers of one path never share a temp file.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; artefacts should get the usual permissions.
    os.chmod(name, _FILE_MODE)
    return Path(name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    ensure_dir(path.parent)
    with writing(path):
        tmp = _tmp_path(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and type(o).__module__.startswith("torch"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    ensure_dir(path.parent)
    with writing(path):
        tmp = _tmp_path(path)
        try:
            # safetensors refuses shared or non-contiguous storage; copies are cheap next to a training step.
            clean = {k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}
            save_file(clean, str(tmp), metadata=dict(metadata) if metadata else None)
            # safetensors writes a new file in place of our temp file, so its 0600 mode comes back.
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in for ``path`` when the block succeeds.

    A crash or an exception leaves the previous ``path`` untouched (and no temporary folder); an I/O
    failure inside the block (disk full, ...) becomes an OutputError naming ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder; choose another output path")
    ensure_dir(path.parent)
    with writing(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with writing(path):
            yield tmp
            share_tree(tmp)
            replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def share_tree(root: str | Path) -> None:
    """Give ``root`` and everything under it the usual permissions (``0666``/``0777`` less the umask).

    Artefacts are meant to be read by colleagues on a shared machine, but several writers create
    owner-only files: ``mkdtemp`` (0700), ``mkstemp`` (0600) and transformers' ``save_pretrained``,
    which writes ``model.safetensors`` as 0600."""
    root = Path(root)
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, _DIR_MODE if p.is_dir() else _FILE_MODE)


def share_weights(model_dir: str | Path) -> None:
    """The usual permissions for the ``*.safetensors`` files transformers' ``save_pretrained`` just wrote
    (as 0600) into ``model_dir``; other files there are left alone."""
    for p in Path(model_dir).glob("*.safetensors"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, _FILE_MODE)


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh, uniquely named folder in ``parent`` with the usual (umask) permissions."""
    parent = ensure_dir(parent)
    with writing(parent):
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.chmod(tmp, _DIR_MODE)
    return tmp


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing an existing ``dst`` (removed only after the move)."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or foreign file is a ModelLoadError
    naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist")
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # noqa: BLE001 - SafetensorError (truncated, garbage header), OSError, ...
        raise ModelLoadError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None


def read_json(path: str | Path, expect: type | None = None) -> Any:
    """JSON from ``path``; unreadable, non-UTF-8 or invalid JSON (or not an ``expect``, e.g. dict)
    raises a ValueError naming the file (callers wrap it in their own error type)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if expect is not None and not isinstance(data, expect):
        raise ValueError(f"{path} must hold a JSON {_json_kind(expect)}, not {_json_kind(type(data))}")
    return data


def _json_kind(tp: type) -> str:
    return {dict: "object", list: "list", str: "string"}.get(tp, tp.__name__)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
