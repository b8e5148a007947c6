"""Errors of unit extraction and unit label stores (clean CLI messages, like other bad input)."""

from __future__ import annotations

from speechdistill.data.errors import BadInputError


class UnitsError(BadInputError):
    """A k-means model or a unit label store that does not fit the request; the message says why."""
