"""The study's state file: one entry per model step (trained, pruned, exported, distilled), so a rerun
reuses every finished model and redoes only what is missing or was made with other settings.

An entry is ``{"key", "spec", "status": "started" | "done" | "skipped", "seconds", "info"}``; ``key``
hashes the step's settings with the content of the model it starts from, so a changed recipe or a
retrained parent makes the step stale.  The file is rewritten atomically after every change.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from speechdistill.errors import BadInputError
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

STATE_FILE = "study_state.json"
VERSION = 1


def step_key(settings: dict[str, Any], parent_fingerprint: str = "") -> str:
    data = json.dumps({"settings": settings, "parent": parent_fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


class StudyState:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.steps: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise BadInputError(f"{self.path}: the study state is not valid JSON ({e}); delete it to start the "
                                    "study over (finished models are then recomputed)") from None
            if doc.get("version") != VERSION:
                raise BadInputError(f"{self.path}: study state version {doc.get('version')!r}, expected {VERSION}")
            self.steps = doc.get("steps", {})

    def finished(self, name: str, key: str) -> dict[str, Any] | None:
        """The entry of a step finished (done or skipped) with this key, or None."""
        e = self.steps.get(name)
        if e and e.get("key") == key and e.get("status") in ("done", "skipped"):
            if e["status"] == "skipped" or Path(e["spec"]).exists():
                return e
            log.warning("%s: %s is gone; recomputing it", name, e["spec"])
        return None

    def started_with(self, name: str, key: str) -> bool:
        """Whether an unfinished run of this step with the same key can be continued."""
        e = self.steps.get(name)
        return bool(e and e.get("key") == key and e.get("status") == "started")

    def mark(self, name: str, key: str, status: str, spec: str = "", seconds: float = 0.0,
             info: dict[str, Any] | None = None) -> None:
        self.steps[name] = {"key": key, "status": status, "spec": spec, "seconds": seconds, "info": info or {}}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"version": VERSION, "steps": self.steps})
