"""Experiment trackers (``train.log_with``) on top of accelerate's: name checks, and a one-line error
naming the package when a requested tracker is not installed (accelerate drops it silently)."""

from __future__ import annotations

import importlib.util

#: accelerate's tracker names (accelerate.utils.LoggerType), written out so validating a config needs no import.
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio", "all")
#: accelerate's project name: TensorBoard events go to OUT_DIR/speechdistill/.
TRACKER_RUN_NAME = "speechdistill"


def tracker_names(log_with: str) -> list[str]:
    """``train.log_with`` -> tracker names ("auto": tensorboard if installed); unknown names raise ValueError."""
    names = [n.strip() for n in str(log_with).split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["auto"]:
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(
            f"train.log_with: unknown tracker(s) {', '.join(unknown)}; use auto, none or any of {', '.join(TRACKERS)}"
        )
    return names


def check_trackers(names: list[str]) -> None:
    """Raise MissingExtraError for a requested tracker whose package is missing."""
    from accelerate.tracking import get_available_trackers

    from speechdistill.utils.extras import MissingExtraError

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name != "all" and name not in available:
            raise MissingExtraError(name, f"train.log_with={name}")
