"""Errors for bad input. Every message names the file (or manifest line) and the problem."""

from __future__ import annotations

from speechdistill.errors import BadInputError

__all__ = ["BadAudioError", "BadInputError", "ManifestError"]


class ManifestError(BadInputError):
    def __init__(self, manifest: str, line_no: int | None, problem: str):
        where = f"{manifest}:{line_no}" if line_no is not None else manifest
        super().__init__(f"{where}: {problem}")
        self.manifest = manifest
        self.line_no = line_no
        self.problem = problem


class BadAudioError(BadInputError):
    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
