"""Label leakage through the cut gradients, with and without the defence, on the pcb-paste scenario.

The label party (PCB maker) and the feature party (paste supplier) train in this process: both
are party apps reached through ``httpx.ASGITransport``, in plain mode (the gradients a feature
party receives are visible in the frames; CKKS mode delivers the same gradients to within
~1e-5 under encryption, so the leakage is the same). A recording transport keeps every frame the
label party sends the feature party. Afterwards the benchmark, as the evaluator, maps each
gradient row to the labels of the boards behind it and runs the attacks of
``services/engine/leakage.py`` on every gradient batch of every epoch. Each defence setting
(off, on, and any ``--grid`` settings) trains once per training seed (``--seeds``, default 3);
results are means over batches, then over seeds. Results in docs/benchmarks.md.

    python benchmarks/leakage.py --out benchmarks/results/leakage.json
    python benchmarks/leakage.py --out /tmp/grid.json --grid 1:0.5,1:1,2:0.5,4:0.25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import torch
from pydantic import SecretStr

from services.engine.dataset import LabelData
from services.engine.defence import defend
from services.engine.keyed import KeyedStream
from services.engine.leakage import ATTACKS, attack_batches
from services.engine.split import distinct_rows, epoch_batches
from services.engine.training import split_rows
from services.party.app import create_app
from services.party.protection import base as links
from services.party.settings import PartySettings
from services.protocol import codec
from services.protocol.messages import (
    DefenceSpec,
    FeaturePartyRef,
    JobState,
    ModelSpec,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.peers import PartyClient, SegmentClient
from services.scenario.pcb_paste import ScenarioFiles, generate

MODEL = ModelSpec(  # the demo's model (services/cli/demo.py)
    bottom={"pcb": SegmentSpec(hidden=[64], out=32), "paste": SegmentSpec(hidden=[64], out=32)},
    top=TopSpec(interactive=16, hidden=[32]),
)
FEATURE = "paste"
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class Captured:
    """What the feature party received, by step: the handles of a step's forward, its gradient."""

    handles: dict[int, I64] = field(default_factory=dict)
    grads: dict[int, F32] = field(default_factory=dict)


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on to ``inner``; decodes every training frame sent to the feature party.

    Like a socket transport it reports the request body written (the trainer starts its local
    work then); ``ASGITransport`` alone never does.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, captured: Captured) -> None:
        self.inner, self.captured = inner, captured

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith(("/forward", "/backward")):
            frame = codec.decode(await request.aread())
            header = frame.header
            if path.endswith("/forward"):
                self.captured.handles[header["step"]] = frame.tensor("handles", dtype="int64")
                if header.get("grad_step") is not None:
                    grad = frame.tensor("grad", dtype="float32", ndim=2)
                    self.captured.grads[header["grad_step"]] = grad
            else:
                self.captured.grads[header["step"]] = frame.tensor("grad", dtype="float32", ndim=2)
        trace = request.extensions.get("trace")
        if trace is not None:
            await trace("http11.send_request_body.complete", {"request": request})
        return await self.inner.handle_async_request(request)


class NormProbe:
    """Records per-example norms of ``dL/dz`` (loss scale) as the defence sees them."""

    def __init__(self) -> None:
        self.norms: list[npt.NDArray[np.float64]] = []

    def __call__(
        self, delta: torch.Tensor, examples: int, spec: DefenceSpec, noise: KeyedStream
    ) -> torch.Tensor:
        self.norms.append((delta * max(examples, 1)).norm(dim=1).double().numpy())
        return defend(delta, examples, spec, noise)

    def quantiles(self) -> dict[str, float]:
        norms = np.concatenate(self.norms) if self.norms else np.zeros(1)
        qs = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
        return {f"q{round(q * 100)}": float(np.quantile(norms, q)) for q in qs}


def training_spec(
    files: ScenarioFiles, args: argparse.Namespace, defence: DefenceSpec, seed: int
) -> TrainingSpec:
    return TrainingSpec(
        job_id="leakage",
        task=Task.BINARY,
        label_column=files.label_binary,
        party="pcb",
        id_column=files.id_column,
        exclude_columns=[files.label_multiclass],
        feature_parties=[
            FeaturePartyRef(name=FEATURE, url=f"http://{FEATURE}", key_column=files.key_paste)
        ],
        model=MODEL,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.epochs,
        seed=seed,
        protection=ProtectionSpec(mode="plain", defence=defence),
        alignment="keys",  # handles = key positions, so captured rows map back to labels
    )


@dataclass(slots=True)
class Run:
    status: TrainingStatus
    data: LabelData
    captured: Captured
    norms: dict[str, float]
    seconds: float


async def train(files: ScenarioFiles, spec: TrainingSpec, work: Path) -> Run:
    """One split training run in this process; returns what the evaluator needs."""
    captured = Captured()
    feature = create_app(
        PartySettings(
            name=FEATURE,
            table=files.paste_supplier,
            key_column=files.key_paste,
            data_dir=work / FEATURE,
            key_master=SecretStr("leakage-benchmark"),
            he_workers=1,
        )
    )
    recording = Recording(httpx.ASGITransport(app=feature), captured)

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=recording)

    label = create_app(
        PartySettings(name="pcb", table=files.pcb_maker, data_dir=work / "pcb"),
        client_factory=factory,
    )
    probe = NormProbe()
    vars(links)["defend"] = probe  # links imported the name; patch it where it is looked up
    t0 = time.perf_counter()
    try:
        async with PartyClient("http://pcb", transport=httpx.ASGITransport(app=label)) as client:
            status = await client.train(spec, poll=0.1)
    finally:
        vars(links)["defend"] = defend
        for app in (label, feature):
            await app.state.runs.shutdown()
            app.state.party.close()
    if status.state is not JobState.FINISHED:
        raise RuntimeError(f"training failed: {status.error}")
    data = label.state.runs.runs[spec.job_id].data
    assert data is not None
    return Run(status, data, captured, probe.quantiles(), time.perf_counter() - t0)


def labelled_batches(run: Run, spec: TrainingSpec) -> Iterator[tuple[int, F32, I64, I64]]:
    """``(epoch, grads, labels, boards)`` of every gradient batch the feature party received.

    The batches are rebuilt as the trainer drew them; a gradient row belongs to one distinct
    handle of its step, labelled positive when any board of the batch behind it is (many boards
    may share a paste lot). The rebuilt handles must equal the ones captured on the wire.
    """
    data = run.data
    train_rows = split_rows(data.splits)[0]
    y = np.asarray(data.labels.values, dtype=np.int64)
    step = 0
    for epoch in range(len(run.status.history)):
        for batch in epoch_batches(train_rows, spec.batch_size, spec.seed, epoch):
            step += 1
            unique, inverse = distinct_rows(data.handles[FEATURE][batch])
            if not np.array_equal(unique, run.captured.handles[step]):
                raise RuntimeError(f"step {step}: rebuilt batch differs from the captured one")
            grads = run.captured.grads[step]
            if grads.shape[0] != unique.shape[0]:
                raise RuntimeError(f"step {step}: {grads.shape[0]} rows for {unique.shape[0]}")
            labels = np.zeros(unique.shape[0], dtype=np.int64)
            np.maximum.at(labels, inverse, y[batch])
            boards = np.bincount(inverse, minlength=unique.shape[0]).astype(np.int64)
            yield epoch, grads, labels, boards


def evaluate(run: Run, spec: TrainingSpec) -> dict[str, Any]:
    """Attack every gradient batch; AUCs as means over batches, overall and per epoch."""
    batches = list(labelled_batches(run, spec))
    report = attack_batches(((g, y) for _, g, y, _ in batches), seed=spec.seed)
    epoch_of = np.array([e for e, *_ in batches])
    per_epoch: dict[str, list[float]] = {}
    for attack, values in report.per_batch.items():
        v = np.array(values)
        means = [np.nanmean(v[epoch_of == e]) for e in np.unique(epoch_of)]
        per_epoch[attack] = [round(float(m), 4) for m in means]
    rows = sum(g.shape[0] for _, g, _, _ in batches)
    return {
        "attacks": report.summary(),
        "worst_epoch": {a: max(m) for a, m in per_epoch.items()},
        "per_epoch": per_epoch,
        "batches": len(batches),
        "boards_per_gradient_row": sum(int(b.sum()) for *_, b in batches) / max(rows, 1),
        "positive_row_fraction": float(np.mean(np.concatenate([y for _, _, y, _ in batches]))),
        "per_example_dz_norm": run.norms,
        "test": run.status.test,
        "best_epoch": run.status.best_epoch,
        "validation_auc": [round(h.validation["auc"], 4) for h in run.status.history],
        "train_seconds": round(run.seconds, 1),
    }


def parse_grid(text: str) -> list[DefenceSpec]:
    """``C:s,C:s`` -> defence settings."""
    out = []
    for item in filter(None, text.split(",")):
        c, _, s = item.partition(":")
        out.append(DefenceSpec(enabled=True, max_norm=float(c), noise_multiplier=float(s)))
    return out


def _mean(runs: list[dict[str, Any]], *path: str) -> float:
    """Mean over runs of the value at ``path``."""
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return float(np.mean(values))


def summarise(runs: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of one setting's runs; the metric drop against the same seeds' off runs."""
    out: dict[str, Any] = {}
    for attack in ATTACKS:
        out[f"{attack}_leak_auc"] = _mean(runs, "attacks", attack, "mean")
        out[f"{attack}_worst_epoch"] = _mean(runs, "worst_epoch", attack)
    out["metric"] = _mean(runs, "test", "auc")
    drops = [o["test"]["auc"] - r["test"]["auc"] for o, r in zip(off, runs, strict=True)]
    out["metric_drop"] = float(np.mean(drops))
    out["metric_drop_per_seed"] = [round(d, 4) for d in drops]
    return out


async def run_setting(
    files: ScenarioFiles, args: argparse.Namespace, defence: DefenceSpec, work: Path
) -> list[dict[str, Any]]:
    """One defence setting, once per seed."""
    out = []
    for seed in range(args.seed, args.seed + args.seeds):
        spec = training_spec(files, args, defence, seed)
        res = evaluate(await train(files, spec, Path(tempfile.mkdtemp(dir=work))), spec)
        res["seed"] = seed
        out.append(res)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    defaults = DefenceSpec()
    on = DefenceSpec(
        enabled=True,
        max_norm=defaults.max_norm if args.max_norm is None else args.max_norm,
        noise_multiplier=(
            defaults.noise_multiplier if args.noise_multiplier is None else args.noise_multiplier
        ),
    )
    lots = args.lots if args.lots is not None else args.boards
    settings = [DefenceSpec(enabled=False), on, *parse_grid(args.grid)]
    runs: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="splice-leakage-") as tmp:
        work = Path(tmp)
        files = generate(work / "data", boards=args.boards, lots=lots, seed=args.scenario_seed)
        for defence in settings:
            runs.append(await run_setting(files, args, defence, work))
            summary = summarise(runs[-1], runs[0])
            print(_line(defence, summary, runs[-1]), flush=True)
    off, on_summary = summarise(runs[0], runs[0]), summarise(runs[1], runs[0])
    return {
        "command": " ".join(["python", *sys.argv]),
        "parameters": {
            "boards": args.boards,
            "lots": lots,
            "scenario_seed": args.scenario_seed,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seeds": list(range(args.seed, args.seed + args.seeds)),
            "mode": "plain",
            "model": MODEL.model_dump(),
            "defence_on": on.model_dump(),
            "attacked": "every gradient batch of every epoch; AUCs are means over batches, "
            "then over seeds",
        },
        "norm_leak_auc_off": off["norm_leak_auc"],
        "norm_leak_auc_on": on_summary["norm_leak_auc"],
        "direction_leak_auc_off": off["direction_leak_auc"],
        "direction_leak_auc_on": on_summary["direction_leak_auc"],
        "principal_leak_auc_off": off["principal_leak_auc"],
        "principal_leak_auc_on": on_summary["principal_leak_auc"],
        "metric": "test auc of the joint model (mean over seeds)",
        "metric_off": off["metric"],
        "metric_on": on_summary["metric"],
        "settings": [
            {"defence": d.model_dump(), **summarise(r, runs[0]), "runs": r}
            for d, r in zip(settings, runs, strict=True)
        ],
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
    }


def _line(defence: DefenceSpec, summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    name = f"C={defence.max_norm:g} s={defence.noise_multiplier:g}" if defence.enabled else "off"
    q50 = np.mean([r["per_example_dz_norm"]["q50"] for r in runs])
    q95 = np.mean([r["per_example_dz_norm"]["q95"] for r in runs])
    return (
        f"{name:>14}: norm {summary['norm_leak_auc']:.3f} "
        f"direction {summary['direction_leak_auc']:.3f} "
        f"principal {summary['principal_leak_auc']:.3f} "
        f"(worst epoch {summary['norm_worst_epoch']:.3f}/{summary['direction_worst_epoch']:.3f}/"
        f"{summary['principal_worst_epoch']:.3f}) | test auc {summary['metric']:.4f} "
        f"drop {summary['metric_drop']:+.4f} | dz norm q50 {q50:.3g} q95 {q95:.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--boards", type=int, default=20_000)
    parser.add_argument("--lots", type=int, default=None, help="paste lots (default: = boards)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1, help="first training seed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per setting")
    parser.add_argument("--scenario-seed", type=int, default=7)
    parser.add_argument("--max-norm", type=float, default=None)
    parser.add_argument("--noise-multiplier", type=float, default=None)
    parser.add_argument(
        "--grid", default="", help="more defence settings to try, as C:s,C:s (max_norm:noise)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['seconds']}s")


if __name__ == "__main__":
    main()
