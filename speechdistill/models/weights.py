"""Loading weights strictly: every tensor the model needs, none it has no place for, every shape right,
every value finite.

``transformers``' ``from_pretrained`` only *warns* about missing tensors (and initialises them at
random), so an incomplete checkpoint would load as a silently random model: export parity would even
pass, comparing the random model with itself.  Everything here raises a ``ModelLoadError`` naming the
file and the tensors instead.  A caller that expects fresh tensors (a new head on a pretrained body)
says so with ``allow_missing`` (``fnmatch`` patterns).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from speechdistill.models.errors import ModelLoadError

log = logging.getLogger(__name__)

# What transformers reads from a local model directory, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_SHOWN = 5  # tensor names listed in a message


def weights_file(model_dir: str | Path) -> Path | None:
    """The weights file transformers would read from ``model_dir``, or None."""
    for name in WEIGHT_FILES:
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    return None


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def check_state_dict_match(
    where: str,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[tuple[str, Sequence[int], Sequence[int]]] = (),
    allow_missing: Sequence[str] = (),
) -> None:
    """Raise ModelLoadError (naming ``where``) if any tensor is missing (and not allowed), unexpected or
    of the wrong shape; ``mismatched``: (name, shape in the file, shape the model needs)."""
    missing = [k for k in missing if not any(fnmatch.fnmatch(k, p) for p in allow_missing)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) the model needs are missing: {_names(missing)}")
    unexpected = list(unexpected)
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) have no place in the model: {_names(unexpected)}")
    mismatched = list(mismatched)
    if mismatched:
        shown = ", ".join(f"{k} is {tuple(a)} in the file but {tuple(b)} in the model" for k, a, b in
                          sorted(mismatched)[:_SHOWN])
        problems.append(f"{len(mismatched)} tensor(s) have the wrong shape: {shown}")
    if problems:
        raise ModelLoadError(
            f"{where}: {'; '.join(problems)} (the weights do not belong to this config: a truncated or "
            "edited checkpoint, or a config.json from another model)"
        )


def load_state_dict_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], where: str, allow_missing: Sequence[str] = ()
) -> None:
    """``module.load_state_dict(state)`` that names every missing, unexpected or mis-shaped tensor."""
    own = module.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    check_state_dict_match(where, set(own) - set(state), set(state) - set(own), mismatched, allow_missing)
    module.load_state_dict(dict(state), strict=not allow_missing)


def check_finite(module: nn.Module, where: str) -> None:
    """Refuse weights with NaN/Inf values: every output would be NaN, and the first loss would blame the
    learning rate or the audio instead of the checkpoint."""
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in module.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(f"{name} ({n} values)" for name, n in bad[:_SHOWN])
        raise ModelLoadError(
            f"{where}: {len(bad)} tensor(s) hold NaN or Inf values ({shown}): the checkpoint is corrupt "
            "(e.g. saved after training diverged)"
        )


def load_pretrained(
    cls: type,
    name_or_path: str | Path,
    config=None,
    dtype: torch.dtype | None = None,
    allow_missing: Sequence[str] = (),
):
    """``cls.from_pretrained`` (an HF or project ``PreTrainedModel``), strictly (see the module doc).

    Tensors outside the model's own modules (the ``lm_head`` of a ``*ForCTC`` checkpoint loaded into
    the bare encoder) are dropped, as intended; anything else that does not fit is an error."""
    local = Path(name_or_path).is_dir()
    where = str(name_or_path)
    if local:
        found = weights_file(name_or_path)
        if found is None:
            raise ModelLoadError(
                f"{name_or_path}: no weights file ({' or '.join(WEIGHT_FILES[::2])}); a model directory holds "
                "config.json and its weights"
            )
        where = str(found)
    kwargs = {"dtype": dtype, "output_loading_info": True, "ignore_mismatched_sizes": True}
    if config is not None:
        kwargs["config"] = config
    try:
        model, info = cls.from_pretrained(str(name_or_path), **kwargs)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/garbage files, refused pickles, inconsistent configs
        if "Weights only load failed" in str(e):
            raise ModelLoadError(
                f"{where}: holds Python objects besides tensors; refusing to unpickle it (that can run arbitrary "
                "code). Convert it to model.safetensors where it came from"
            ) from None
        why = _first_line(e)
        if "deserializing header" in why:
            why = f"truncated, or not a safetensors file: {why}"
        raise ModelLoadError(f"{where}: cannot load the weights ({why})") from None
    own_roots = {k.split(".", 1)[0] for k in model.state_dict()}
    unexpected = [k for k in info.get("unexpected_keys", ()) if k.split(".", 1)[0] in own_roots]
    dropped = sorted(set(info.get("unexpected_keys", ())) - set(unexpected))
    if dropped:
        log.info("%s: left out %d tensor(s) of a task head (%s)", where, len(dropped), _names(dropped))
    check_state_dict_match(
        where, info.get("missing_keys", ()), unexpected, info.get("mismatched_keys", ()), allow_missing
    )
    if info.get("error_msgs"):
        raise ModelLoadError(f"{where}: {_first_line(Exception(info['error_msgs'][0]))}")
    check_finite(model, where)
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:400]
