"""The ``gbdt`` family registered at the party services."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa
from fastapi import APIRouter

from services.engine.checkpoint import atomic_write
from services.engine.source import TableSource
from services.party.families.base import ModelFamily
from services.party.families.gbdt.label_run import LABEL_FILE, TreeTrainer
from services.party.inference.serving import ServingModel
from services.party.training.driver import SplitTrainer
from services.party.training.recovery import OUTCOME_FILE
from services.protocol.messages import TrainingSpec
from services.protocol.peers import SegmentClient


class GbdtFamily(ModelFamily):
    """Vertical gradient-boosted trees (services/engine/gbdt/)."""

    name: ClassVar[str] = "gbdt"

    def trainer(
        self,
        spec: TrainingSpec,
        table: pa.Table | TableSource,
        clients: Mapping[str, SegmentClient],
        **options: Any,
    ) -> SplitTrainer:
        return TreeTrainer(spec, table, clients, **options)

    def save_finished(self, run: SplitTrainer) -> None:
        # the last tree checkpoint is the model; the outcome marks the run as not to resume
        if run.cut_dir is not None:
            doc = {"state": run.status.state.value, "error": None, "tree_model": LABEL_FILE}
            atomic_write(run.cut_dir / OUTCOME_FILE, json.dumps(doc).encode())

    def serving_model(self, run: SplitTrainer) -> ServingModel:
        from services.party.families.gbdt.serving import TreeServingModel

        if not isinstance(run, TreeTrainer):
            raise TypeError("a gbdt job is served from a tree run")
        return TreeServingModel(run)

    def routers(self) -> list[APIRouter]:
        from services.party.families.gbdt.routes import router

        return [router]
