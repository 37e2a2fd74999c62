"""A failed training names the party at fault (issue 19): the feature party whose call failed."""

from __future__ import annotations

from services.protocol.messages import JobState
from tests.conftest import InProcess
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical


async def test_a_feature_party_refusing_names_itself(
    vertical: Vertical, in_process: InProcess
) -> None:
    # the feature party takes no PSI set this large: it refuses the alignment
    status = await train(in_process(vertical, psi_max_keys=1), spec_for(vertical, epochs=1))
    (feature,) = vertical.features
    assert status.state is JobState.FAILED, status
    assert status.failed_party == feature
    assert status.error is not None


async def test_a_failure_of_its_own_names_the_label_party(
    vertical: Vertical, in_process: InProcess
) -> None:
    spec = spec_for(vertical, epochs=1, label_column="no_such_column")
    status = await train(in_process(vertical), spec)
    assert status.state is JobState.FAILED, status
    assert status.failed_party == "maker"
