"""The ``splice`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.cli.audit_cmd import audit_app
from services.cli.contract_cmd import contract_app
from services.cli.data_cmd import data_app
from services.cli.finance_cmd import finance_app
from services.cli.job_cmd import job_app
from services.cli.job_watch import list_jobs as _job_watch  # noqa: F401 (registers commands)
from services.cli.model_cmd import model_app
from services.cli.org_cmd import org_app
from services.cli.party_cmd import party_app
from services.cli.predict_cmd import predict
from services.cli.registry_cmd import registry_app
from services.protocol.messages import ModelSpec, ProtectionMode, ProtectionSpec, Task, WireDtype

app = typer.Typer(
    help="Splice: cross-company split learning with contracts, encryption and metering.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(party_app, name="party")
app.add_typer(registry_app, name="registry")
app.add_typer(org_app, name="org")
app.add_typer(contract_app, name="contract")
app.add_typer(job_app, name="job")
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(finance_app, name="finance")
app.add_typer(audit_app, name="audit")
app.command()(predict)
scenario_app = typer.Typer(help="Generate realistic synthetic scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _wire(value: str) -> WireDtype:
    if value not in ("float32", "float16", "bfloat16"):
        raise _fail(f"--wire-dtype must be float32, float16 or bfloat16, not {value!r}")
    return value  # type: ignore[return-value]


@app.command()
def pilot(
    label: Annotated[str, typer.Option(help="Label party: NAME=CSV:LABELCOL.")],
    features: Annotated[
        list[str], typer.Option(help="Feature party: NAME=CSV[:KEYCOL] (repeat for more).")
    ],
    key: Annotated[str, typer.Option(help="Join key column (label table and feature tables).")],
    task: Annotated[Task, typer.Option(help="What the label is.")],
    out: Annotated[Path, typer.Option(help="Output folder (summary.json, curves.png, logs).")],
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Default: 20, or 60 under 500 rows.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default: 32..256 by table size.")
    ] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Default: 5, or 10 under 500 rows.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    id_column: Annotated[
        str | None, typer.Option(help="Row id column of the label table (not a feature).")
    ] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option(help="Label-table column that is not a feature, e.g. a second label."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model spec (JSON) to use instead of the default, or 'gbdt' for vertical "
            "gradient-boosted trees compared with pooled LightGBM."
        ),
    ] = None,
    trees: Annotated[int, typer.Option(min=1, max=2000, help="gbdt: boosting rounds.")] = 10,
    depth: Annotated[int, typer.Option(min=1, max=12, help="gbdt: tree depth.")] = 3,
    bins: Annotated[int, typer.Option(min=2, max=256, help="gbdt: bins per feature.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="gbdt: learning rate.")] = 0.3,
    wire_dtype: Annotated[
        str, typer.Option(help="Float format on the wire: float32, float16 or bfloat16.")
    ] = "float32",
    protection: Annotated[
        str, typer.Option(help="Cut-layer protection: ckks (default) or plain.")
    ] = "ckks",
    defence: Annotated[
        bool, typer.Option(help="Label-leakage defence on the gradients parties receive.")
    ] = True,
    label_epsilon: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=50.0,
            help="Label privacy: randomise the labels once (randomised response) with this "
            "epsilon per row before training (default: off; one operator runs every party).",
        ),
    ] = None,
    tune: Annotated[
        int | None,
        typer.Option(help="Tune: N Optuna trials of the hyperparameters, chosen on validation."),
    ] = None,
    tune_budget: Annotated[
        float | None, typer.Option(help="Tuning time budget in seconds (no trial starts after).")
    ] = None,
    tune_params: Annotated[
        list[str] | None,
        typer.Option(help="Hyperparameter to tune (repeat): widths, lr, batch, epochs, ..."),
    ] = None,
    contract: Annotated[
        Path | None,
        typer.Option(
            help="Train the job this contract fixes (task, label, columns, model, protection, "
            "epochs, batch): --task, --epochs, --batch-size, --patience, --model, --protection, "
            "--defence, --label-epsilon and --drop are then the contract's."
        ),
    ] = None,
) -> None:
    """Train a joint model over HTTP on real party processes, beside label-only and centralized."""
    from contracts import read_contract
    from services.cli.pilot import PilotConfig, PilotError, parse_party, run_pilot
    from services.cli.tune import tune_config
    from services.protocol.errors import SpliceError

    is_trees = model is not None and str(model) == "gbdt" and not model.exists()
    try:
        tuning = None
        if tune is not None or tune_budget is not None or tune_params:
            if tune is None:
                raise PilotError("--tune-budget and --tune-params need --tune N")
            tuning = tune_config(tune, tune_budget, tune_params, seed)
            if contract is not None:
                raise PilotError("--tune tunes an open-mode pilot: a contract fixes the training")
        cfg = PilotConfig(
            label=parse_party(label, label=True),
            features=[parse_party(f, label=False) for f in features],
            key=key,
            task=task,
            out=out,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            id_column=id_column,
            drop=drop or [],
            wire_dtype=_wire(wire_dtype),
            protection=_protection(protection, defence, label_epsilon),
            model=ModelSpec.model_validate_json(model.read_text())
            if model and not is_trees
            else None,
            contract=read_contract(contract) if contract else None,
            tune=tuning,
        )
        if is_trees:
            from services.cli.tree_pilot import run_tree_pilot
            from services.protocol.messages import GbdtModelSpec

            spec = GbdtModelSpec(
                family="gbdt", trees=trees, depth=depth, bins=bins, learning_rate=learning_rate
            )
            run_tree_pilot(cfg, spec, console)
            return
        run_pilot(cfg, console)
    except (PilotError, ValueError, OSError, SpliceError) as exc:
        raise _fail(str(exc)) from exc


def _protection(mode: str, defence: bool, label_epsilon: float | None = None) -> ProtectionSpec:
    if mode not in ("plain", "ckks"):
        raise _fail(f"--protection must be plain or ckks, not {mode!r}")
    doc: dict[str, object] = {"mode": mode, "defence": {"enabled": defence}}
    if label_epsilon is not None:
        doc["label_dp"] = {"mechanism": "randomized_response", "epsilon": label_epsilon}
    return ProtectionSpec.model_validate(doc)


@scenario_app.command("pcb-paste")
def scenario_pcb_paste(
    out: Annotated[Path, typer.Option(help="Folder for the generated tables.")],
    boards: Annotated[int, typer.Option(min=100)] = 20000,
    lots: Annotated[int, typer.Option(min=10)] = 400,
    seed: Annotated[int, typer.Option(min=0)] = 7,
    third_party: Annotated[bool, typer.Option(help="Add a stencil supplier.")] = False,
    parquet: Annotated[
        bool, typer.Option(help="Write Parquet (64k-row groups) instead of CSV.")
    ] = False,
    later_lots: Annotated[
        int,
        typer.Option(
            min=0, help="Also write lots shipped after training and boards printed with them."
        ),
    ] = 0,
    drift: Annotated[
        str | None,
        typer.Option(help="A process column whose readings drift in the later boards."),
    ] = None,
) -> None:
    """Synthetic solder-paste supplier + PCB maker data with physically motivated defects.

    With ``--later-lots`` (or ``--drift``), also the data after training, in ``OUT/later/``:
    the supplier's new lots and the boards printed with them, one process column drifted by
    two standard deviations with ``--drift``."""
    from services.scenario.live import DRIFT_COLUMNS, later_batch
    from services.scenario.pcb_paste import generate

    if drift is not None and drift not in DRIFT_COLUMNS:
        raise typer.BadParameter(f"one of {', '.join(DRIFT_COLUMNS)}", param_hint="--drift")

    files = generate(
        out,
        boards=boards,
        lots=lots,
        seed=seed,
        third_party=third_party,
        fmt="parquet" if parquet else "csv",
    )
    console.print(f"PCB maker (label party): {files.pcb_maker}")
    console.print(f"paste supplier:          {files.paste_supplier}")
    if files.stencil_supplier is not None:
        console.print(f"stencil supplier:        {files.stencil_supplier}")
    if later_lots or drift is not None:
        later = later_batch(out / "later", files, lots=later_lots or 30, drift=drift)
        console.print(f"later lots ({later.new_lots}):  {later.lots}")
        console.print(
            f"later boards:            {later.boards}" + (f" ({drift} drifted)" if drift else "")
        )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-out"),
    boards: Annotated[int, typer.Option(min=100)] = 20000,
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs (the contract's: 60).")] = 60,
    registry: Annotated[
        bool, typer.Option(help="Govern the run with the contract registry (default).")
    ] = True,
    plain: Annotated[
        bool, typer.Option(help="Plain cut layer instead of CKKS (the contract's default).")
    ] = False,
    defence: Annotated[
        bool, typer.Option(help="Label-leakage defence on the gradients (the contract's default).")
    ] = True,
    predictions: Annotated[
        int,
        typer.Option(
            min=0, help="Boards the OEM asks predictions for once the model is deployed (governed)."
        ),
    ] = 300,
    tls: Annotated[
        bool,
        typer.Option(
            help="Serve every service over HTTPS with certificates of a throwaway CA made now."
        ),
    ] = False,
    keep_running: Annotated[
        bool,
        typer.Option(
            help="At the end, print the web console's URL and a sign-in for each demo "
            "organisation, and keep the registry up until Ctrl-C (governed runs)."
        ),
    ] = False,
) -> None:
    """The whole story on one machine: registry and contract, parties, training, comparison,
    deployment, metered predictions and the revenue report."""
    from services.cli.demo import run_demo

    mode: ProtectionMode = "plain" if plain else "ckks"
    run_demo(
        out,
        boards=boards,
        epochs=epochs,
        console=console,
        governed=registry,
        mode=mode,
        defence=defence,
        serve_rows=predictions,
        tls=tls,
        keep_running=keep_running,
    )


if __name__ == "__main__":
    app()
