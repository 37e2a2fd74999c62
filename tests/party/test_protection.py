"""One test suite for every protection mode registered in services/party/protection (issues 4
and 16): every mode trains the same model as the plain mode.

Every mode starts the interactive weights from the same shares and moves them along the same
SGD trajectory, and the defence draws the same noise, so a ckks run differs from the plain run
with the same seed only by CKKS rounding (~1e-5 per value). A new mode registered in
``protection.MODES`` runs through every test here.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.party import protection
from services.party.segment import SegmentJob
from services.protocol.messages import JobState, SegmentSpec, TrainingSpec, TrainingStatus
from tests.conftest import InProcess
from tests.party.test_training import centralized, spec_for, train
from tests.synthetic import Vertical, make_vertical

MODES = list(protection.MODES)


def protected(v: Vertical, mode: str, *, defence: bool = True, **kw: Any) -> TrainingSpec:
    spec = spec_for(v, **kw)
    prot = {"mode": mode, "defence": {"enabled": defence}}
    return spec.model_copy(update={"protection": spec.protection.model_validate(prot)})


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


async def _run(
    in_process: InProcess, v: Vertical, spec: TrainingSpec, **feature_settings: object
) -> TrainingStatus:
    status = await train(in_process(v, **feature_settings), spec)
    assert status.state is JobState.FINISHED, status.error
    assert status.mode == spec.protection.mode
    return status


async def test_modes_train_the_same_model(vertical: Vertical, in_process: InProcess) -> None:
    """Same seed and job keys, defence on: every epoch of ckks matches plain within CKKS
    rounding (each mode runs in its own parties, which derive the same job keys)."""
    runs = {m: await _run(in_process, vertical, protected(vertical, m, epochs=3)) for m in MODES}
    plain, ckks = runs["plain"], runs["ckks"]
    for a, b in zip(plain.history, ckks.history, strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-3)
        assert b.validation["auc"] == pytest.approx(a.validation["auc"], abs=2e-3)
    assert ckks.test["auc"] == pytest.approx(plain.test["auc"], abs=0.005)
    assert ckks.key_bytes > 0 and plain.key_bytes == 0
    # ciphertexts cost more than floats, but stay within the 4 KB/sample budget at this width
    assert ckks.train_bytes > plain.train_bytes


async def test_without_defence_each_mode_equals_centralized(
    vertical: Vertical, in_process: InProcess, mode: str
) -> None:
    """No defence: the split model is the centralized one (interactive weights by SGD)."""
    spec = protected(vertical, mode, defence=False, epochs=2)
    status = await _run(in_process, vertical, spec)
    _, central = centralized(vertical, spec, ["maker", "f0"])
    tol = 1e-4 if mode == "plain" else 2e-3
    for split_epoch, central_epoch in zip(status.history, central.history, strict=True):
        assert split_epoch.train_loss == pytest.approx(central_epoch.train_loss, rel=tol)
    assert status.test["auc"] == pytest.approx(central.test["auc"], abs=max(tol, 2e-3))


async def test_each_mode_learns_from_two_feature_parties(
    tmp_path: Any, in_process: InProcess, mode: str
) -> None:
    v = make_vertical(tmp_path / "d2", rows=1500, lots=80, seed=5, parties=2)
    spec = protected(v, mode, epochs=6, batch_size=128)
    status = await _run(in_process, v, spec)
    _, alone = centralized(v, spec, ["maker"])
    assert status.test["auc"] > alone.test["auc"] + 0.03


async def test_each_mode_restores_its_best_epoch(
    vertical: Vertical, in_process: InProcess, mode: str
) -> None:
    """Early stopping restores every party's best state, the shares of W included (restoring one
    share without the other would leave W = W_A + W_P meaningless and the test AUC near 0.5)."""
    spec = protected(vertical, mode, epochs=5)
    spec = spec.model_copy(update={"patience": 1, "validation_fraction": 0.3})
    status = await _run(in_process, vertical, spec)
    assert status.best_epoch is not None
    best = status.history[status.best_epoch].validation["auc"]
    losses = [h.validation["loss"] for h in status.history]
    assert losses[status.best_epoch] == min(losses)  # selection on the validation loss
    assert status.test["auc"] > 0.7
    assert status.test["auc"] == pytest.approx(best, abs=0.08)


def identity_bottom(spec: TrainingSpec, party: str = "f0") -> TrainingSpec:
    bottom = {**spec.model.bottom, party: SegmentSpec(kind="identity")}
    return spec.model_copy(update={"model": spec.model.model_copy(update={"bottom": bottom})})


async def test_an_identity_bottom_never_receives_dl_dh(
    vertical: Vertical, in_process: InProcess, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feature party whose bottom is its encoded features has nothing to train with dL/dh, so
    it never gets one (issue 16): only its share of W trains, and the joint model still learns
    from its features."""
    received: list[object] = []
    receive = SegmentJob._grad

    def spy(self: SegmentJob, frame: object, step: int) -> object:
        received.append(sorted(frame.tensors))  # type: ignore[attr-defined]
        return receive(self, frame, step)  # type: ignore[arg-type]

    monkeypatch.setattr(SegmentJob, "_grad", spy)
    spec = identity_bottom(protected(vertical, mode, epochs=6, batch_size=128))
    status = await _run(in_process, vertical, spec, allow_plain_raw=True)
    # plain: nothing at all travels back; a mode with a share: only W's gradient share
    assert all(names == [] or "grad_h" not in names and "grad" not in names for names in received)
    _, alone = centralized(vertical, spec, ["maker"])
    assert status.test["auc"] > alone.test["auc"] + 0.03
    if mode == "plain":
        assert received == []  # A holds W whole: the party is never asked to train anything
    else:
        assert received  # its share of W trains


async def test_an_identity_bottom_without_defence_equals_centralized(
    vertical: Vertical, in_process: InProcess, mode: str
) -> None:
    spec = identity_bottom(protected(vertical, mode, defence=False, epochs=2))
    status = await _run(in_process, vertical, spec, allow_plain_raw=True)
    _, central = centralized(vertical, spec, ["maker", "f0"])
    tol = 1e-4 if mode == "plain" else 2e-3
    for split_epoch, central_epoch in zip(status.history, central.history, strict=True):
        assert split_epoch.train_loss == pytest.approx(central_epoch.train_loss, rel=tol)


async def test_plain_mode_does_not_send_raw_features_unless_the_party_allows_it(
    vertical: Vertical, in_process: InProcess
) -> None:
    spec = identity_bottom(protected(vertical, "plain", epochs=1))
    status = await train(in_process(vertical), spec)
    assert status.state is JobState.FAILED
    assert status.error is not None and "in the clear" in status.error
