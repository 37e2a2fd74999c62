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
"""

from __future__ import annotations

import torch

from services.protocol.messages import DefenceSpec


def defend(
    delta: torch.Tensor, examples: int, spec: DefenceSpec, generator: torch.Generator
) -> torch.Tensor:
    """Clip and noise the rows of ``delta`` (mean-loss gradient over ``examples`` examples)."""
    if not spec.enabled:
        return delta
    scale = float(max(examples, 1))
    per_example = delta * scale
    norms = per_example.norm(dim=1, keepdim=True).clamp_min(1e-12)
    clipped = per_example * (spec.max_norm / norms).clamp(max=1.0)
    if spec.noise_multiplier > 0:
        # Drawn in float32 (torch's vectorised sampler, 5x faster than float64 at 1,200 x 16)
        # and widened: noise needs no more precision than that.
        noise = torch.randn(
            clipped.shape, generator=generator, dtype=torch.float32, device=clipped.device
        )
        clipped = clipped + noise.to(clipped.dtype) * (spec.noise_multiplier * spec.max_norm)
    out: torch.Tensor = clipped / scale
    return out
