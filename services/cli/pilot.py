"""``splice pilot``: real party processes train a joint model over HTTP, beside two baselines."""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.job import training_spec
from contracts.spec import Contract
from services.cli.baselines import join_locally, train_baseline
from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.cli.defaults import data_defaults
from services.cli.governed import Governance
from services.cli.pooled import pooled_gbdt, pooled_mlp
from services.cli.report import write_outputs
from services.cli.tls import LocalCa
from services.cli.tune import TuneConfig, run_trials, tuning_summary
from services.engine.keyed import JobKey
from services.engine.tasks import PRIMARY_METRIC
from services.protocol.messages import (
    ContractTraining,
    FeaturePartyRef,
    JobState,
    ModelSpec,
    ProtectionSpec,
    Task,
    TrainingSpec,
    TrainingStatus,
    WireDtype,
)
from services.protocol.peers import PartyClient

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class PilotError(ValueError):
    """A pilot argument is wrong; the message says which and why."""


@dataclass(slots=True)
class PartyTable:
    """A party's name, table and (label: label column / feature: key column)."""

    name: str
    path: Path
    column: str | None


def parse_party(text: str, *, label: bool) -> PartyTable:
    """``NAME=PATH:LABELCOL`` (label) or ``NAME=PATH[:KEYCOL]`` (feature)."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise PilotError(f"{text!r}: expected NAME=PATH{':LABELCOL' if label else '[:KEYCOL]'}")
    if not _NAME.match(name):
        raise PilotError(f"party name {name!r} must match {_NAME.pattern}")
    path, colon, column = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not colon:
        path, column = rest, ""
    if label and not column:
        raise PilotError(f"{text!r}: the label party needs its label column (NAME=PATH:LABELCOL)")
    p = Path(path)
    if not p.is_file():
        raise PilotError(f"table {p} of party {name!r} does not exist")
    return PartyTable(name, p, column or None)


@dataclass(slots=True)
class PilotConfig:
    """Everything a pilot run needs."""

    label: PartyTable
    features: list[PartyTable]
    key: str
    task: Task
    out: Path
    epochs: int | None = None
    """None: by the table's size (services/cli/defaults.py), as ``model`` and ``patience``."""
    batch_size: int | None = None
    patience: int | None = None
    seed: int = 0
    id_column: str | None = None
    drop: list[str] = field(default_factory=list)
    wire_dtype: WireDtype = "float32"
    protection: ProtectionSpec = field(default_factory=ProtectionSpec)
    model: ModelSpec | None = None
    job_id: str = "pilot"
    extra: dict[str, Any] = field(default_factory=dict)
    governance: Governance | None = None
    tls: LocalCa | None = None
    """Serve every party over HTTPS with certificates of this throwaway CA."""
    orgs: dict[str, str] = field(default_factory=dict)
    """Party name -> organisation name, for a governed run."""
    after_training: Callable[[str], dict[str, Any]] | None = None
    feature_urls: dict[str, str] = field(default_factory=dict)
    """Each feature party's URL once started (what ``after_training`` may call)."""
    key_masters: dict[str, str] | None = None
    """Each party's ``SPLICE_PARTY_KEY_MASTER`` (default: fresh random ones per run). The
    pilot runs every party, so it may know their job keys and start the centralized baseline
    from the split job's very weights; pass fixed masters to repeat a run exactly."""
    """Called with the label party's URL once the joint model is trained, while the parties
    still run (the demo deploys and serves it); what it answers joins the summary."""
    tune: TuneConfig | None = None
    """``--tune``: trials of the hyperparameters before the joint model is chosen (open mode)."""
    contract: Contract | None = None
    """The job is the one this contract fixes (task, label, columns, model, protection,
    training settings): derived with ``contracts.job.training_spec``, as the parties derive it;
    under ``governance`` the label party derives it itself from the registry's copy."""

    def feature_key(self, party: PartyTable) -> str:
        """The join key of a feature party (its own, or the pilot's ``--key``)."""
        return party.column or self.key

    def spec(self, urls: dict[str, str]) -> TrainingSpec:
        """The training spec the label party receives (the contract's job, with a contract)."""
        names = [self.label.name, *(f.name for f in self.features)]
        if len(set(names)) != len(names):
            raise PilotError(f"party names must be distinct: {names}")
        if self.contract is not None:
            signed = {p.name for p in self.contract.parties}
            if signed != set(names) or self.contract.label_party.name != self.label.name:
                raise PilotError(
                    f"the contract's parties are {sorted(signed)} (label party "
                    f"{self.contract.label_party.name!r}); the pilot names {names}"
                )
            gov = self.governance
            return training_spec(
                self.contract,
                job_id=gov.job_id if gov is not None else self.job_id,
                contract_id=gov.contract_id if gov is not None else None,
                feature_urls={f.name: urls.get(f.name, "http://unset") for f in self.features},
                seed=self.seed,
                wire_dtype=self.wire_dtype,
            )
        defaults = data_defaults(table_rows(self.label.path))
        model = self.model or defaults.model(names, self.label.name)
        assert self.label.column is not None
        return TrainingSpec(
            job_id=self.job_id,
            task=self.task,
            label_column=self.label.column,
            party=self.label.name,
            feature_parties=[
                FeaturePartyRef(
                    name=f.name,
                    url=urls.get(f.name, "http://unset"),
                    key_column=self.feature_key(f),
                )
                for f in self.features
            ],
            model=model,
            epochs=self.epochs or defaults.epochs,
            batch_size=self.batch_size or auto_batch_size(self.label.path),
            patience=self.patience or defaults.patience,
            seed=self.seed,
            id_column=self.id_column,
            exclude_columns=self.drop,
            wire_dtype=self.wire_dtype,
            protection=self.protection,
        )


def key_masters(parties: list[str], given: dict[str, str] | None = None) -> dict[str, str]:
    """Each party's key master for a pilot: ``given`` ones, else fresh ones from the OS
    CSPRNG (never derived from the seed or a name, which every party knows)."""
    return {p: (given or {}).get(p) or secrets.token_hex(32) for p in parties}


def job_keys_of(masters: dict[str, str], job_id: str) -> dict[str, JobKey]:
    """The job keys the parties derive from their masters (what the baseline starts from)."""
    return {p: JobKey.derive(m.encode(), job_id) for p, m in masters.items()}


def table_rows(table: Path) -> int:
    """Rows of a CSV or Parquet table (a CSV's lines less the header)."""
    import pyarrow.parquet as pq

    if table.suffix.lower() in {".parquet", ".pq"}:
        return int(pq.ParquetFile(table).metadata.num_rows)
    with table.open("rb") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


def auto_batch_size(label_table: Path) -> int:
    """A batch size that gives small tables enough steps per epoch: 32 up to 256 (>= 25 steps)."""
    rows = table_rows(label_table)
    size = 32
    while size < 256 and rows / (size * 2) >= 25:
        size *= 2
    return size


async def _follow(
    client: PartyClient, spec: TrainingSpec, console: Console, derived: ContractTraining | None
) -> TrainingStatus:
    columns = (
        TextColumn("[bold]split training[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}  val {task.fields[val]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("train", total=None, epoch="-", val="-")

        def show(status: TrainingStatus) -> None:
            total = status.steps_per_epoch * status.epochs or None
            last = status.history[-1].validation if status.history else {}
            val = f"{last.get(PRIMARY_METRIC[spec.task], float('nan')):.4f}" if last else "-"
            progress.update(
                bar, total=total, completed=status.step, epoch=status.epoch + 1, val=val
            )

        if derived is not None and spec.contract_id is not None:
            started = await client.start_contract_training(spec.contract_id, derived)
            return await client.follow(started, on_status=show)
        return await client.train(spec, on_status=show)


def run_pilot(cfg: PilotConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the split job on real processes, then both baselines; write and return the summary."""
    console = console or Console()
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.spec({})  # validate names and model before starting anything
    if cfg.tune is not None and (cfg.contract is not None or cfg.governance is not None):
        raise PilotError("--tune tunes an open-mode pilot: a contract fixes the training")
    gov = cfg.governance
    clock = time.perf_counter()
    with LocalCluster(cfg.out, tls=cfg.tls) as cluster:
        launches = [
            PartyLaunch(cfg.label.name, cfg.label.path),
            *(PartyLaunch(f.name, f.path, cfg.feature_key(f)) for f in cfg.features),
        ]
        ports = {launch.name: free_port() for launch in launches}
        # One operator starts every party here, so it may know their job keys and start the
        # centralized baseline from the very weights of the split job.
        masters = key_masters([launch.name for launch in launches], cfg.key_masters)
        for launch in launches:
            if gov is not None:
                public = cluster.url(ports[launch.name])
                launch.env = gov.party_env(cfg.orgs[launch.name], public)
            launch.env = {
                **launch.env,
                "SPLICE_PARTY_KEY_MASTER": masters[launch.name],
                # one operator holds every table: an identity bottom may travel in plain mode
                "SPLICE_PARTY_ALLOW_PLAIN_RAW": "true",
            }
        started = cluster.start_all(launches, ports=ports)
        urls = {f.name: started[f.name].url for f in cfg.features}
        label_url = started[cfg.label.name].url
        spec = cfg.spec(urls)
        if gov is not None and cfg.contract is None:
            spec = spec.model_copy(update={"job_id": gov.job_id, "contract_id": gov.contract_id})
        console.print(
            "parties up: "
            + ", ".join(f"{n} {u}" for n, u in {cfg.label.name: label_url, **urls}.items())
        )
        auth = None
        if gov is not None:
            auth = gov.auth(cfg.orgs[cfg.label.name], label_url, "jobs:run")
        verify = True if gov is None else gov.verify
        # governed by a contract: the label party derives the job from the registry's copy
        derived = None
        if gov is not None and cfg.contract is not None:
            derived = ContractTraining.model_validate(
                {"job_id": gov.job_id, "seed": cfg.seed, "feature_urls": urls}
            )
        if cfg.tune is not None:
            tuning = run_trials(
                cfg.tune,
                spec,
                table_rows(cfg.label.path),
                lambda trial: asyncio.run(_run_remote(label_url, trial, console)),
                console.print,
            )
            joint, spec = tuning.best.status, tuning.best.spec
            cfg.extra = {**cfg.extra, "tuning": tuning_summary(tuning)}
        else:
            joint = asyncio.run(_run_remote(label_url, spec, console, auth, verify, derived))
        cfg.feature_urls = urls
        timings = {"parties_and_split_training": time.perf_counter() - clock}
        if joint.state is JobState.FINISHED and cfg.after_training is not None:
            clock = time.perf_counter()
            cfg.extra = {**cfg.extra, **cfg.after_training(label_url)}
            timings["after_training"] = time.perf_counter() - clock
    if joint.state is not JobState.FINISHED:
        raise PilotError(f"split training failed: {joint.error}")
    # Small MLPs gain nothing from intra-op threads and OpenMP spinning collapses under load.
    torch.set_num_threads(1)
    clock = time.perf_counter()
    with console.status("training baselines (label party alone, centralized)"):
        local = join_locally(
            spec,
            str(cfg.label.path),
            {f.name: str(f.path) for f in cfg.features},
            {f.name: cfg.feature_key(f) for f in cfg.features},
        )
        everyone = [cfg.label.name, *(f.name for f in cfg.features)]
        keys = job_keys_of(masters, spec.job_id)
        label_only = train_baseline(local, spec, [cfg.label.name], keys=keys)
        centralized = train_baseline(local, spec, everyone, keys=keys)
    timings["baselines"] = time.perf_counter() - clock
    with console.status("pooled references (LightGBM, scikit-learn MLP)"):
        references = {"pooled_gbdt": pooled_gbdt(local), "pooled_mlp": pooled_mlp(local)}
    timings["pooled_references"] = sum(r.seconds for r in references.values())
    cfg.extra = {
        **cfg.extra,
        "timings": {**cfg.extra.get("timings", {}), **{k: round(v, 1) for k, v in timings.items()}},
    }
    return write_outputs(cfg, spec, joint, label_only, centralized, console, references)


async def _run_remote(
    url: str,
    spec: TrainingSpec,
    console: Console,
    auth: httpx.Auth | None = None,
    verify: ssl.SSLContext | bool = True,
    derived: ContractTraining | None = None,
) -> TrainingStatus:
    started = time.perf_counter()
    async with PartyClient(url, timeout=120.0, auth=auth, verify=verify) as client:
        status = await _follow(client, spec, console, derived)
    console.print(f"split training {status.state.value} in {time.perf_counter() - started:.1f} s")
    return status
