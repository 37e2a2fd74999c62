"""The ``nn`` family: neural segments trained by split learning (services/party/training/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from services.engine.source import TableSource
from services.party.families.base import ModelFamily
from services.party.inference.serving import ServingModel
from services.party.training.driver import SplitTrainer
from services.party.training.recovery import MODEL_FILE, load_model, save_finished
from services.party.training.steps import snapshot
from services.protocol.messages import TrainingSpec, TrainingStatus
from services.protocol.peers import SegmentClient


class NnFamily(ModelFamily):
    """Split learning of bottom segments and a top model (the driver, unchanged)."""

    name: ClassVar[str] = "nn"
    model_file: ClassVar[str] = MODEL_FILE

    def trainer(
        self,
        spec: TrainingSpec,
        table: pa.Table | TableSource,
        clients: Mapping[str, SegmentClient],
        **options: Any,
    ) -> SplitTrainer:
        return SplitTrainer(spec, table, clients, **options)

    def save_finished(self, run: SplitTrainer) -> None:
        if run.top is not None and run.cut_dir is not None:
            save_finished(run.cut_dir, run.status, snapshot(run.top, run.own, run.links))

    def serving_model(self, run: SplitTrainer) -> ServingModel:
        return ServingModel(run)

    async def reload(self, run: SplitTrainer, status: TrainingStatus, directory: Path) -> None:
        await run.reload(status, load_model(directory))
