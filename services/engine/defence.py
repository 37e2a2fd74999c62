"""Label-leakage defence: what the label party does to ``dL/dz`` before anything derived from it
reaches a feature party.

A feature party receives ``dL/dh = dL/dz W^T`` for its rows. From the norms and directions of
those gradients it can score which rows are positive (Li et al., ICLR 2022). The defence works on
per-example gradients: each row of ``dL/dz`` is brought to the per-example loss scale (times the
number of examples in the batch), clipped to ``max_norm``, and receives Gaussian noise of standard
deviation ``noise_multiplier * max_norm`` per coordinate; then it is scaled back. After clipping
most rows share one norm, and the noise hides the direction that separates the classes.

Only what feature parties receive is defended: the label party's own top, bottom and its
interactive-layer gradient ``h^T dL/dz`` use the exact gradient (in CKKS mode the feature party
sees the latter only under a statistical mask).

The noise comes from a stream keyed by the label party's private job key and the step
(services/engine/keyed.py), never from anything the feature party knows: regenerating it from
the job's public seed explains nothing of what the party receives
(tests/party/test_private_randomness.py).
"""

from __future__ import annotations

import torch

from services.engine.keyed import KeyedStream
from services.protocol.messages import DefenceSpec


def defend(
    delta: torch.Tensor, examples: int, spec: DefenceSpec, noise: KeyedStream
) -> torch.Tensor:
    """Clip and noise the rows of ``delta`` (mean-loss gradient over ``examples`` examples);
    the noise is read from ``noise``."""
    if not spec.enabled:
        return delta
    scale = float(max(examples, 1))
    per_example = delta * scale
    norms = per_example.norm(dim=1, keepdim=True).clamp_min(1e-12)
    clipped = per_example * (spec.max_norm / norms).clamp(max=1.0)
    if spec.noise_multiplier > 0:
        draws = torch.from_numpy(noise.normal(tuple(clipped.shape))).to(clipped.dtype)
        clipped = clipped + draws * (spec.noise_multiplier * spec.max_norm)
    out: torch.Tensor = clipped / scale
    return out
