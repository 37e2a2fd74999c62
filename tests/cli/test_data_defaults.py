"""``splice pilot`` defaults that depend on the table's size (docs/adr/0015): a tiny table gets
the regularised small-data model and longer patience; what the user names wins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.cli.defaults import (
    BINNED_ROWS,
    NUMERIC_BINS,
    SMALL,
    STANDARD,
    TINY,
    TINY_ROWS,
    data_defaults,
)
from services.cli.pilot import PilotConfig, parse_party
from services.protocol.messages import SegmentSpec, Task, nn_model


def _tables(tmp_path: Path, rows: int) -> PilotConfig:
    label, feats = tmp_path / "label.csv", tmp_path / "feats.csv"
    label.write_text("id,y,a\n" + "".join(f"{i},{i % 2},{i}\n" for i in range(rows)))
    feats.write_text("id,b\n" + "".join(f"{i},{i * 2}\n" for i in range(rows)))
    return PilotConfig(
        label=parse_party(f"guest={label}:y", label=True),
        features=[parse_party(f"host={feats}", label=False)],
        key="id",
        task=Task.BINARY,
        out=tmp_path / "out",
    )


def test_the_rule_switches_at_the_row_thresholds() -> None:
    assert data_defaults(TINY_ROWS - 1) == replace(TINY, numeric_bins=NUMERIC_BINS)
    assert data_defaults(TINY_ROWS) is data_defaults(BINNED_ROWS - 1) is SMALL
    assert SMALL == replace(
        STANDARD, activation="gelu", feature_identity=True, numeric_bins=NUMERIC_BINS
    )
    assert data_defaults(BINNED_ROWS) is STANDARD and STANDARD.numeric_bins == 0
    assert not STANDARD.feature_identity and STANDARD.activation == "relu"
    assert TINY.dropout > 0 and TINY.weight_decay > 0 and TINY.patience > STANDARD.patience


def test_a_tiny_table_gets_the_regularised_model(tmp_path: Path) -> None:
    spec = _tables(tmp_path, 120).spec({})
    model = nn_model(spec.model)
    assert (spec.epochs, spec.patience) == (TINY.epochs, TINY.patience)
    guest, host = model.bottom["guest"], model.bottom["host"]
    assert guest.kind == "mlp" and guest.hidden == [TINY.width] and guest.dropout == 0.3
    assert guest.activation == model.top.activation == TINY.activation == "gelu"
    # the feature party's encoded features (bins included) enter through W alone
    assert host.kind == "identity" and host.numeric_bins == guest.numeric_bins == NUMERIC_BINS
    assert model.optimizer.name == "adamw" and model.optimizer.weight_decay == TINY.weight_decay
    # the shared weights keep SGD (linear: both shares follow it), now with weight decay
    assert model.interactive_optimizer.name == "sgd"
    assert model.interactive_optimizer.weight_decay == TINY.interactive_decay > 0
    assert model.top.hidden == [TINY.top] and model.top.interactive == TINY.interactive


def test_identity_feature_bottoms_need_the_label_party() -> None:
    three = TINY.model(["b", "a", "c"], "a")
    assert [three.bottom[p].kind for p in ("a", "b", "c")] == ["mlp", "identity", "identity"]
    assert all(s.kind == "mlp" for s in STANDARD.model(["a", "b"]).bottom.values())
    with pytest.raises(ValueError, match="label party"):
        TINY.model(["a", "b"], "z")


def test_a_small_table_gets_standard_widths_with_identity_feature_bottoms(
    tmp_path: Path,
) -> None:
    spec = _tables(tmp_path, TINY_ROWS + 10).spec({})
    model = nn_model(spec.model)
    assert (spec.epochs, spec.patience) == (STANDARD.epochs, STANDARD.patience)
    guest = SegmentSpec(hidden=[64], out=32, activation="gelu", numeric_bins=NUMERIC_BINS)
    assert model.bottom["guest"] == guest
    assert model.bottom["host"] == SegmentSpec(kind="identity", numeric_bins=NUMERIC_BINS)
    assert model.top.activation == "gelu" and model.top.dropout == 0
    assert model.optimizer.name == "adam" and model.interactive_optimizer.weight_decay == 0


def test_a_larger_table_keeps_the_standard_defaults_and_named_settings_win(
    tmp_path: Path,
) -> None:
    cfg = _tables(tmp_path, BINNED_ROWS)
    spec = cfg.spec({})
    model = nn_model(spec.model)
    assert (spec.epochs, spec.patience) == (STANDARD.epochs, STANDARD.patience)
    assert model.bottom["guest"] == SegmentSpec(hidden=[64], out=32)
    assert model.bottom["host"] == model.bottom["guest"]
    assert model.top.activation == "relu"
    assert model.optimizer.name == "adam" and model.optimizer.weight_decay == 0
    assert model.optimizer.lr == 1e-3 and model.interactive_optimizer.weight_decay == 0
    cfg.epochs, cfg.patience = 7, 2
    assert (cfg.spec({}).epochs, cfg.spec({}).patience) == (7, 2)
