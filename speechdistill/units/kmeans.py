"""K-means over teacher features (HuBERT's discrete targets), fitted with scikit-learn's MiniBatchKMeans.

The fitted model is stored as ``kmeans.safetensors`` (the centres) + ``kmeans.json`` (what they were
fitted on), never as a pickle.  Labelling assigns each frame its nearest centre in Euclidean distance,
which is what ``MiniBatchKMeans.predict`` does (tested against it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechdistill.units.errors import UnitsError
from speechdistill.utils.io import atomic_save_safetensors, atomic_write_json, load_safetensors, read_json

log = logging.getLogger(__name__)

CENTRES_FILE = "kmeans.safetensors"
META_FILE = "kmeans.json"


@dataclass
class KMeansModel:
    centres: torch.Tensor  # [k, dim] float32
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    @property
    def fingerprint(self) -> str:
        """Identifies the centres (label stores record it; a resumed run must use the same model)."""
        return hashlib.sha256(self.centres.contiguous().numpy().tobytes()).hexdigest()[:16]

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        atomic_save_safetensors(out_dir / CENTRES_FILE, {"centres": self.centres})
        atomic_write_json(out_dir / META_FILE, {**self.meta, "k": self.k, "dim": self.dim,
                                                "fingerprint": self.fingerprint})

    @classmethod
    def load(cls, path: str | Path) -> KMeansModel:
        """From a folder holding ``kmeans.safetensors`` (or the file itself)."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        centres_path = folder / CENTRES_FILE
        if not centres_path.is_file():
            raise UnitsError(f"{path}: no k-means model ({CENTRES_FILE} is missing); fit one with `speechdistill units`")
        try:
            centres = load_safetensors(centres_path)["centres"].float()
        except (KeyError, OSError, ValueError) as e:
            raise UnitsError(f"{centres_path}: not a k-means model written by speechdistill ({e})") from None
        if centres.ndim != 2 or centres.shape[0] < 2:
            raise UnitsError(f"{centres_path}: centres must be a [k >= 2, dim] matrix, got {tuple(centres.shape)}")
        meta = read_json(folder / META_FILE) if (folder / META_FILE).is_file() else {}
        return cls(centres, meta)

    @torch.no_grad()
    def assign(self, features: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Nearest centre of every row of ``features`` [N, dim] (long [N])."""
        if features.shape[-1] != self.dim:
            raise UnitsError(f"features are {features.shape[-1]} wide but the k-means centres are {self.dim} wide")
        c = self.centres.to(features.device)
        c_sq = (c * c).sum(1)
        out = []
        for x in features.float().split(chunk):
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centre.
            out.append((c_sq[None, :] - 2.0 * x @ c.T).argmin(1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=features.device)


def fit_kmeans(features: np.ndarray, k: int, seed: int = 0, batch_size: int = 10000, max_iter: int = 100,
               n_init: int = 20, meta: dict | None = None) -> KMeansModel:
    """MiniBatchKMeans with the settings of HuBERT's released k-means recipe (k-means++ init,
    ``max_no_improvement=100``, ``reassignment_ratio=0``, ``tol=0``)."""
    from sklearn import __version__ as sklearn_version
    from sklearn.cluster import MiniBatchKMeans

    if features.shape[0] < k:
        raise UnitsError(f"only {features.shape[0]} frames to fit k={k} clusters: use more audio or a smaller k")
    km = MiniBatchKMeans(
        n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size, tol=0.0,
        max_no_improvement=100, n_init=n_init, reassignment_ratio=0.0, compute_labels=False,
        random_state=seed,
    )
    km.fit(features)
    inertia = float(-km.score(features)) / features.shape[0]
    log.info("k-means: %d clusters on %d frames, mean squared distance %.4g", k, features.shape[0], inertia)
    centres = torch.from_numpy(np.asarray(km.cluster_centers_, dtype=np.float32))
    return KMeansModel(centres, {**(meta or {}), "fit_frames": int(features.shape[0]), "seed": seed,
                                 "mean_squared_distance": inertia, "sklearn": sklearn_version,
                                 "batch_size": batch_size, "max_iter": max_iter, "n_init": n_init})
