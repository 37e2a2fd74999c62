"""The ``gbdt`` family registered at the party services."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from fastapi import APIRouter

from services.engine.source import TableSource
from services.party.families.base import ModelFamily
from services.party.families.gbdt.label_run import LABEL_FILE, TreeTrainer
from services.party.inference.serving import ServingModel
from services.party.training.driver import SplitTrainer
from services.party.training.recovery import save_outcome_status
from services.protocol.messages import TrainingSpec, TrainingStatus
from services.protocol.peers import SegmentClient


class GbdtFamily(ModelFamily):
    """Vertical gradient-boosted trees (services/engine/gbdt/)."""

    name: ClassVar[str] = "gbdt"
    model_file: ClassVar[str] = LABEL_FILE

    def trainer(
        self,
        spec: TrainingSpec,
        table: pa.Table | TableSource,
        clients: Mapping[str, SegmentClient],
        **options: Any,
    ) -> SplitTrainer:
        return TreeTrainer(spec, table, clients, **options)

    def save_finished(self, run: SplitTrainer) -> None:
        # the last tree checkpoint is the model; the outcome marks the run finished
        if run.cut_dir is not None:
            save_outcome_status(run.cut_dir, run.status)

    async def reload(self, run: SplitTrainer, status: TrainingStatus, directory: Path) -> None:
        if not isinstance(run, TreeTrainer):
            raise TypeError("a gbdt job reloads into a tree run")
        await run.reload_trees(status)

    def serving_model(self, run: SplitTrainer) -> ServingModel:
        from services.party.families.gbdt.serving import TreeServingModel

        if not isinstance(run, TreeTrainer):
            raise TypeError("a gbdt job is served from a tree run")
        return TreeServingModel(run)

    def routers(self) -> list[APIRouter]:
        from services.party.families.gbdt.routes import router

        return [router]
