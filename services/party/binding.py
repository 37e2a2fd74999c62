"""A job's binding to the table version it aligned and trained on (``data.json`` in the job's
directory, beside its checkpoints).

When a job is prepared (feature party) or aligned (label party) the party records the digest of
the columns the job uses (``services.engine.content.table_digest``) and the fitted encoder. A
restarted party reloading the job reads its table again: rows are found by key (never by
position), the saved encoder encodes them exactly as before, and a table whose digest changed is
refused with 409 ``data_changed`` naming the party, until a new job trains on the new data.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from services.engine.checkpoint import atomic_write
from services.engine.content import table_digest
from services.engine.source import TableSource
from services.engine.tabular import EncoderState, FeatureEncoder
from services.protocol.errors import Conflict, ErrorCode

BINDING_FILE = "data.json"


class DataBinding(BaseModel):
    """What a job used of a party's table: the digest of ``columns`` (rows sorted, unless
    ``ordered``), the encoder fitted on them, and (label party, regression) the target scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    party: str
    digest: str
    columns: list[str]
    ordered: bool = False
    encoder: EncoderState | None = None
    label_mean: float | None = None
    label_std: float | None = None
    table_version: int = 1
    """The version of the party's live table the job bound (``services.party.live_table``):
    later versions only append rows, so the bound rows are the table's first rows at it."""

    @classmethod
    def of(
        cls,
        party: str,
        table: pa.Table | TableSource,
        columns: list[str],
        *,
        ordered: bool = False,
        encoder: FeatureEncoder | None = None,
        label_scale: tuple[float, float] | None = None,
        table_version: int = 1,
    ) -> DataBinding:
        """The binding of a job to ``columns`` of ``table`` as they are now."""
        return cls(
            party=party,
            digest=table_digest(table, columns, ordered=ordered),
            columns=list(columns),
            ordered=ordered,
            encoder=None if encoder is None else encoder.state,
            label_mean=None if label_scale is None else label_scale[0],
            label_std=None if label_scale is None else label_scale[1],
            table_version=table_version,
        )

    @property
    def feature_encoder(self) -> FeatureEncoder | None:
        """The job's fitted encoder."""
        return None if self.encoder is None else FeatureEncoder(self.encoder)

    def save(self, directory: Path) -> None:
        """Write ``data.json`` (atomically)."""
        atomic_write(directory / BINDING_FILE, self.model_dump_json().encode())

    @classmethod
    def load(cls, directory: Path) -> DataBinding | None:
        """What :meth:`save` wrote, or None."""
        path = directory / BINDING_FILE
        if not path.is_file():
            return None
        return cls.model_validate_json(path.read_bytes())

    def verify(self, table: pa.Table | TableSource, job_id: str) -> None:
        """Refuse (409 ``data_changed``) a table whose content differs from the bound one."""
        try:
            now = table_digest(table, self.columns, ordered=self.ordered)
        except ValueError as exc:  # a column the job used is gone
            raise data_changed(self.party, job_id, str(exc)) from exc
        if now != self.digest:
            raise data_changed(self.party, job_id, "the rows differ")


def data_changed(party: str, job_id: str, why: str) -> Conflict:
    """The refusal of a job whose table changed since it aligned and trained on it."""
    return Conflict(
        f"party {party}'s table changed since job {job_id} aligned and trained on it ({why}); "
        "the job serves only the data it was trained on: train a new job on the new data",
        code=ErrorCode.DATA_CHANGED,
        detail={"party": party, "job_id": job_id},
    )
