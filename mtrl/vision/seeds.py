"""Seeds derived from several integers, for the vision pipeline's reproducible randomness.

The data order and loader workers (:mod:`mtrl.vision.loading`) and the per-sample augmentations of the
real data sets (:mod:`mtrl.vision.data.npy_layout`) each draw from a generator seeded by ``(seed, epoch,
...)``, so a run resumed mid-epoch sees the same randomness as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
