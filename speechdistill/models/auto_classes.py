"""Register the project's model types (GenDistiller, pruned encoders) with transformers' ``AutoConfig``
and ``AutoModel`` as soon as transformers' auto module loads, so that after a bare
``import speechdistill`` ``transformers.AutoModel.from_pretrained(student_dir)`` works.

Why a post-import hook rather than registering in ``speechdistill/__init__``: registering needs the
model classes, i.e. torch and transformers (seconds), and ``import speechdistill`` must stay instant
for commands and libraries that never touch a model.  Why the registration waits until no
``transformers``/``speechdistill`` module is half-imported: transformers imports its auto module from
inside other imports (``modeling_layers`` imports ``AutoModel`` while, say, ``modeling_hubert`` is
still executing), and importing our model code at that moment would read those half-made modules.
So every such module loaded while the hook waits runs through a loader wrapper that counts open
imports; when the count falls to zero after the auto module exists, the classes are registered (once)
and the hook removes itself.
"""

from __future__ import annotations

import sys

#: Any of these loaded means someone can call AutoConfig / AutoModel.
TRIGGERS = ("transformers.models.auto.configuration_auto", "transformers.models.auto.modeling_auto")
_WATCHED = ("transformers", "speechdistill")


class _State:
    done = False
    open_imports = 0


def _watched(fullname: str) -> bool:
    return fullname.partition(".")[0] in _WATCHED


def register_now() -> None:
    """Register every project model type with AutoConfig and AutoModel (idempotent)."""
    from speechdistill.models.registry import register_auto_classes

    _State.done = True
    uninstall()
    register_auto_classes()


def _maybe_register() -> None:
    if _State.done or _State.open_imports or not any(t in sys.modules for t in TRIGGERS):
        return
    try:
        register_now()
    except Exception as e:  # noqa: BLE001 - never break the (unrelated) import that triggered us
        import logging

        logging.getLogger(__name__).warning("could not register speechdistill models with transformers' Auto classes: %s", e)


# Plain classes (importlib's protocols are duck-typed): importing importlib.abc costs ~20 ms.
class _CountingLoader:
    """Runs the real loader, counting open imports; puts the real loader back on the module first, so
    nothing inside sees this wrapper."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self._inner
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._inner
        _State.open_imports += 1
        try:
            self._inner.exec_module(module)
        finally:
            _State.open_imports -= 1
        _maybe_register()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    def find_spec(self, fullname, path, target=None):
        if _State.done or not _watched(fullname):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CountingLoader(spec.loader)
        return spec


_FINDER = _Finder()


def install() -> None:
    """Called by ``import speechdistill``: register at once if transformers' auto module is already
    loaded, else when it loads."""
    if _State.done:
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    _maybe_register()


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
