"""How far a tiny perturbation moves a split-training run's final test metric (how sensitive a
training configuration is to CKKS rounding).

Plain mode, in process, fixed key masters per party (so every run of a seed starts from the same
private job keys, and the centralized baseline from the same weights), the demo's model on the
pcb-paste scenario. For each
training seed, a reference run and runs that add Gaussian noise of std ``sigma`` to every
``z = h W`` the label party computes (CKKS rounding is a perturbation of ~1e-5 of this kind); the
spread of their test AUCs is the configuration's sensitivity. The label party alone and the
centralized model (same seed, same configuration) are trained in process too. Defaults: the
demo's configuration (services/cli/demo.py).

    python benchmarks/perturbation.py --seeds 7 1 2 3 4 --repeats 2 \\
        --out benchmarks/results/perturbation.json
    python benchmarks/perturbation.py --batch-size 512 --lr 3e-3 --interactive-lr 0.2 \\
        --patience 4 --seeds 7 1 2 4 --out benchmarks/results/perturbation-b512.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from pydantic import SecretStr

from services.cli.baselines import join_locally, train_baseline
from services.cli.demo import DemoTraining
from services.cli.pilot import job_keys_of
from services.party.app import create_app
from services.party.protection import PlainLink
from services.party.settings import PartySettings
from services.protocol.messages import (
    JobState,
    TrainingSpec,
)
from services.protocol.peers import PartyClient, SegmentClient
from services.scenario.pcb_paste import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_options import (  # noqa: E402
    add_training_options,
    plain_demo_spec,
    training_from,
)

MASTERS = {"pcb": "perturbation-benchmark-pcb", "paste": "perturbation-benchmark-paste"}
"""Key masters of the in-process parties: every run of one seed (one job id) starts from the
same private job keys; only the perturbation differs."""


def training_spec(files: Any, cfg: DemoTraining, seed: int) -> TrainingSpec:
    """The demo's training job on the scenario, in plain mode, for one seed."""
    return plain_demo_spec(files, cfg, job_id=f"p-s{seed}", seed=seed)


def train(
    work: Path, files: Any, spec: TrainingSpec, sigma: float, noise_seed: int, tag: str
) -> dict[str, Any]:
    """One in-process plain run with noise of std ``sigma`` on every ``z``."""
    original = PlainLink.forward
    gen = torch.Generator().manual_seed(noise_seed)

    async def perturbed(self: PlainLink, *args: Any) -> torch.Tensor:
        z = await original(self, *args)
        return z + sigma * torch.randn(z.shape, generator=gen) if sigma > 0 else z

    PlainLink.forward = perturbed  # type: ignore[method-assign,assignment]
    try:
        paste = create_app(
            PartySettings(
                name="paste",
                table=files.paste_supplier,
                key_column=files.key_paste,
                data_dir=work / f"paste-{tag}",
                key_master=SecretStr(MASTERS["paste"]),
            )
        )
        label = create_app(
            PartySettings(
                name="pcb",
                table=files.pcb_maker,
                data_dir=work / f"pcb-{tag}",
                key_master=SecretStr(MASTERS["pcb"]),
            ),
            client_factory=lambda u, _: SegmentClient(u, transport=httpx.ASGITransport(app=paste)),
        )

        async def go() -> Any:
            async with PartyClient("http://pcb", transport=httpx.ASGITransport(app=label)) as c:
                return await c.train(spec, poll=0.05)

        status = asyncio.run(go())
    finally:
        PlainLink.forward = original  # type: ignore[method-assign]
    if status.state is not JobState.FINISHED:
        raise RuntimeError(f"training failed: {status.error}")
    return {
        "sigma": sigma,
        "noise_seed": noise_seed,
        "test_auc": round(status.test["auc"], 5),
        "best_epoch": status.best_epoch,
        "epochs_run": len(status.history),
        "validation_auc": [round(h.validation["auc"], 5) for h in status.history],
    }


def one_seed(
    work: Path, files: Any, cfg: DemoTraining, seed: int, sigmas: list[float], repeats: int
) -> dict[str, Any]:
    """Reference and perturbed runs of one seed, and both baselines."""
    spec = training_spec(files, cfg, seed)
    runs = [train(work, files, spec, 0.0, 0, f"s{seed}-ref")]
    for sigma in sigmas:
        for r in range(repeats):
            runs.append(train(work, files, spec, sigma, r + 1, f"s{seed}-{sigma:g}-{r}"))
    ref = runs[0]["test_auc"]
    local = join_locally(
        spec, str(files.pcb_maker), {"paste": str(files.paste_supplier)}, {"paste": files.key_paste}
    )
    keys = job_keys_of(MASTERS, spec.job_id)
    alone = train_baseline(local, spec, ["pcb"], keys=keys).test["auc"]
    pooled = train_baseline(local, spec, ["pcb", "paste"], keys=keys)
    out = {
        "seed": seed,
        "reference_test_auc": ref,
        "max_abs_difference": round(max(abs(r["test_auc"] - ref) for r in runs), 5),
        "label_only": round(alone, 5),
        "centralized": round(pooled.test["auc"], 5),
        "runs": runs,
    }
    summary = {k: v for k, v in out.items() if k != "runs"}
    summary["perturbed"] = [r["test_auc"] for r in runs[1:]]
    summary["best_epochs"] = [r["best_epoch"] for r in runs]
    print(json.dumps(summary), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--boards", type=int, default=20000)
    add_training_options(ap)
    ap.add_argument("--no-early-stopping", action="store_true", help="patience = epochs + 1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2e-5, 1e-8])
    ap.add_argument("--repeats", type=int, default=1, help="perturbed runs per sigma and seed")
    args = ap.parse_args()
    patience = args.epochs + 1 if args.no_early_stopping else args.patience
    cfg = training_from(args, patience=patience)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="splice-perturb-"))
    files = generate(work / "data", boards=args.boards, lots=max(50, args.boards // 50), seed=7)
    started = time.perf_counter()
    seeds = [one_seed(work, files, cfg, s, args.sigmas, args.repeats) for s in args.seeds]
    diffs = [s["max_abs_difference"] for s in seeds]
    refs = [s["reference_test_auc"] for s in seeds]
    doc = {
        "benchmark": "perturbation",
        "command": "python benchmarks/perturbation.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
        "config": cfg.as_dict(),
        "boards": args.boards,
        "max_abs_difference": max(diffs),
        "mean_reference_test_auc": round(statistics.fmean(refs), 5),
        "mean_gain_over_label_only": round(
            statistics.fmean(s["reference_test_auc"] - s["label_only"] for s in seeds), 5
        ),
        "mean_gap_to_centralized": round(
            statistics.fmean(s["centralized"] - s["reference_test_auc"] for s in seeds), 5
        ),
        "seeds": seeds,
    }
    print(json.dumps({k: v for k, v in doc.items() if k != "seeds"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
