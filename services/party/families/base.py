"""The interface every model family implements at a party (docs/adr/0014-model-families.md).

A family is one package under ``services/party/families/`` registered once in
:data:`services.party.families.FAMILIES`: the label party's training run of a job (its driver,
checkpoints, progress and model version), how a finished run is kept to serve after a restart,
and the routes the feature parties answer that family's protocol on. Alignment (PSI), contract
binding, job keys, reporting and metering are shared by every family and not part of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pyarrow as pa
    from fastapi import APIRouter

    from services.engine.source import TableSource
    from services.party.inference.serving import ServingModel
    from services.party.training.driver import SplitTrainer
    from services.protocol.messages import TrainingSpec, TrainingStatus
    from services.protocol.peers import SegmentClient


class ModelFamily(ABC):
    """One model family's side of the party services."""

    name: ClassVar[str]
    """The contract's ``model.family`` value this family trains and serves."""
    model_file: ClassVar[str]
    """The file of a finished run's directory that holds its model (what a restart serves)."""

    @abstractmethod
    def trainer(
        self,
        spec: TrainingSpec,
        table: pa.Table | TableSource,
        clients: Mapping[str, SegmentClient],
        **options: Any,
    ) -> SplitTrainer:
        """The label party's run of ``spec`` (``options``: the shared run options of
        :class:`~services.party.training.driver.SplitTrainer`: job key, pools, checkpoint
        directory, resume, deadlines)."""

    @abstractmethod
    def save_finished(self, run: SplitTrainer) -> None:
        """Keep what a finished run needs to serve after a restart (its checkpoint directory)."""

    @abstractmethod
    async def reload(self, run: SplitTrainer, status: TrainingStatus, directory: Path) -> None:
        """Make a run this party finished before it restarted serve again (``run`` is a fresh
        resumed run of its spec; ``status`` its final status)."""

    @abstractmethod
    def serving_model(self, run: SplitTrainer) -> ServingModel:
        """The served view of a finished run (predictions through the parties)."""

    def routers(self) -> list[APIRouter]:
        """Feature-party endpoints of the family's protocol (none: it uses the shared ones)."""
        return []
