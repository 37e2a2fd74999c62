"""How far a tiny perturbation moves a long split-training run (why CKKS vs plain is compared per
epoch, not only at the end).

Plain mode, in process, fixed share salt (so a run is bit-for-bit repeatable), the demo's model
on the pcb-paste scenario, a fixed number of epochs without early stopping. Each run adds
Gaussian noise of std ``sigma`` to every ``z = h W`` the label party computes (``sigma = 0`` is
the reference run); CKKS rounding is a perturbation of ~1e-5 of this kind.

    python benchmarks/perturbation.py --out benchmarks/results/perturbation.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from pydantic import SecretStr

from services.party.app import create_app
from services.party.settings import PartySettings
from services.party.training import links
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    OptimizerSpec,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
)
from services.protocol.peers import PartyClient, SegmentClient
from services.scenario.pcb_paste import generate


def train(work: Path, files: Any, sigma: float, epochs: int, tag: str) -> dict[str, Any]:
    original = links.PlainLink.forward
    gen = torch.Generator().manual_seed(0)

    async def perturbed(self: links.PlainLink, *args: Any) -> torch.Tensor:
        z = await original(self, *args)
        return z + sigma * torch.randn(z.shape, generator=gen) if sigma > 0 else z

    links.PlainLink.forward = perturbed  # type: ignore[method-assign]
    try:
        paste = create_app(
            PartySettings(
                name="paste",
                table=files.paste_supplier,
                key_column=files.key_paste,
                data_dir=work / f"paste-{tag}",
                share_secret=SecretStr("perturbation-benchmark"),
            )
        )
        label = create_app(
            PartySettings(name="pcb", table=files.pcb_maker, data_dir=work / f"pcb-{tag}"),
            client_factory=lambda u, _: SegmentClient(u, transport=httpx.ASGITransport(app=paste)),
        )
        spec = TrainingSpec(
            job_id=f"p-{tag}",
            task=Task.BINARY,
            label_column="defect",
            party="pcb",
            id_column="board_id",
            exclude_columns=["defect_type"],
            feature_parties=[
                FeaturePartyRef(name="paste", url="http://paste", key_column="paste_lot_id")
            ],
            model=ModelSpec(
                bottom={n: SegmentSpec(hidden=[64], out=32) for n in ("pcb", "paste")},
                top=TopSpec(interactive=16, hidden=[32]),
                optimizer=OptimizerSpec(lr=3e-3),
                interactive_optimizer=OptimizerSpec(name="sgd", lr=0.2, momentum=0.9),
            ),
            epochs=epochs,
            batch_size=512,
            patience=epochs + 1,
            seed=7,
            protection=ProtectionSpec(mode="plain"),
        )

        async def go() -> Any:
            async with PartyClient("http://pcb", transport=httpx.ASGITransport(app=label)) as c:
                status = await c.start_training(spec)
                while status.state not in (JobState.FINISHED, JobState.FAILED):
                    await asyncio.sleep(0.2)
                    status = await c.training(spec.job_id)
                return status

        status = asyncio.run(go())
    finally:
        links.PlainLink.forward = original  # type: ignore[method-assign]
    return {
        "sigma": sigma,
        "test_auc": round(status.test["auc"], 5),
        "best_epoch": status.best_epoch,
        "validation_auc": [round(h.validation["auc"], 5) for h in status.history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.0, 2e-5, 1e-6, 1e-8])
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="splice-perturb-"))
    files = generate(work / "data", boards=20000, lots=400, seed=7)
    runs = [train(work, files, s, args.epochs, str(i)) for i, s in enumerate(args.sigmas)]
    for r in runs:
        print(json.dumps({k: r[k] for k in ("sigma", "test_auc", "best_epoch")}), flush=True)
    ref = runs[0]["test_auc"]
    doc = {
        "benchmark": "perturbation",
        "command": "python benchmarks/perturbation.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epochs": args.epochs,
        "reference_test_auc": ref,
        "max_abs_difference": max(abs(r["test_auc"] - ref) for r in runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
