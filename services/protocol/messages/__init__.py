"""Typed messages exchanged between Splice services.

JSON messages are pydantic models. Binary messages (forward, backward, embed) carry one of the
``*Header`` models as the codec frame's header and their tensors beside it.

Every state-changing message names its job, its step and an idempotency key: a retried request is
answered from the cache, not applied twice; a different request for an already-applied step is a
conflict.

The models live in one module per concern; this package re-exports every name."""

from __future__ import annotations

from services.protocol.messages.base import (
    MAX_PREDICT_ROWS as MAX_PREDICT_ROWS,
)
from services.protocol.messages.base import (
    MAX_PSI_KEYS as MAX_PSI_KEYS,
)
from services.protocol.messages.base import (
    EventId as EventId,
)
from services.protocol.messages.base import (
    IdempotencyKey as IdempotencyKey,
)
from services.protocol.messages.base import (
    JobId as JobId,
)
from services.protocol.messages.base import (
    PartyName as PartyName,
)
from services.protocol.messages.base import (
    PsiLimits as PsiLimits,
)
from services.protocol.messages.base import (
    Step as Step,
)
from services.protocol.messages.base import (
    Strict as Strict,
)
from services.protocol.messages.base import (
    Task as Task,
)
from services.protocol.messages.base import (
    WireDtype as WireDtype,
)
from services.protocol.messages.frames import (
    ActivationsHeader as ActivationsHeader,
)
from services.protocol.messages.frames import (
    BackwardHeader as BackwardHeader,
)
from services.protocol.messages.frames import (
    CheckpointInfo as CheckpointInfo,
)
from services.protocol.messages.frames import (
    CheckpointRequest as CheckpointRequest,
)
from services.protocol.messages.frames import (
    EmbedHeader as EmbedHeader,
)
from services.protocol.messages.frames import (
    ForwardHeader as ForwardHeader,
)
from services.protocol.messages.frames import (
    MixHeader as MixHeader,
)
from services.protocol.messages.frames import (
    StepAck as StepAck,
)
from services.protocol.messages.inference import (
    CellValue as CellValue,
)
from services.protocol.messages.inference import (
    Outcome as Outcome,
)
from services.protocol.messages.inference import (
    OutcomesRequest as OutcomesRequest,
)
from services.protocol.messages.inference import (
    OutcomesResponse as OutcomesResponse,
)
from services.protocol.messages.inference import (
    Prediction as Prediction,
)
from services.protocol.messages.inference import (
    PredictRequest as PredictRequest,
)
from services.protocol.messages.inference import (
    PredictResponse as PredictResponse,
)
from services.protocol.messages.jobs import (
    JobTerms as JobTerms,
)
from services.protocol.messages.jobs import (
    PreparedJob as PreparedJob,
)
from services.protocol.messages.jobs import (
    PrepareJob as PrepareJob,
)
from services.protocol.messages.metering import (
    ObservationBatch as ObservationBatch,
)
from services.protocol.messages.metering import (
    ServingObservation as ServingObservation,
)
from services.protocol.messages.metering import (
    UsageBatch as UsageBatch,
)
from services.protocol.messages.metering import (
    UsageEvent as UsageEvent,
)
from services.protocol.messages.metering import (
    UsageReceipt as UsageReceipt,
)
from services.protocol.messages.metering import (
    UsageRefusal as UsageRefusal,
)
from services.protocol.messages.model import (
    MAX_BATCH_SIZE as MAX_BATCH_SIZE,
)
from services.protocol.messages.model import (
    MAX_EPOCHS as MAX_EPOCHS,
)
from services.protocol.messages.model import (
    MAX_HIDDEN_LAYERS as MAX_HIDDEN_LAYERS,
)
from services.protocol.messages.model import (
    MAX_LAYER_WEIGHTS as MAX_LAYER_WEIGHTS,
)
from services.protocol.messages.model import (
    MAX_WIDTH as MAX_WIDTH,
)
from services.protocol.messages.model import (
    MODEL_FAMILIES as MODEL_FAMILIES,
)
from services.protocol.messages.model import (
    Activation as Activation,
)
from services.protocol.messages.model import (
    ColumnName as ColumnName,
)
from services.protocol.messages.model import (
    GbdtModelSpec as GbdtModelSpec,
)
from services.protocol.messages.model import (
    Hidden as Hidden,
)
from services.protocol.messages.model import (
    JobModel as JobModel,
)
from services.protocol.messages.model import (
    ModelFamily as ModelFamily,
)
from services.protocol.messages.model import (
    ModelSpec as ModelSpec,
)
from services.protocol.messages.model import (
    OptimizerSpec as OptimizerSpec,
)
from services.protocol.messages.model import (
    SegmentSpec as SegmentSpec,
)
from services.protocol.messages.model import (
    TopSpec as TopSpec,
)
from services.protocol.messages.model import (
    Width as Width,
)
from services.protocol.messages.model import (
    nn_model as nn_model,
)
from services.protocol.messages.protection import (
    CkksSpec as CkksSpec,
)
from services.protocol.messages.protection import (
    DefenceSpec as DefenceSpec,
)
from services.protocol.messages.protection import (
    LabelDpSpec as LabelDpSpec,
)
from services.protocol.messages.protection import (
    LabelDpUnit as LabelDpUnit,
)
from services.protocol.messages.protection import (
    ProtectionMode as ProtectionMode,
)
from services.protocol.messages.protection import (
    ProtectionSpec as ProtectionSpec,
)
from services.protocol.messages.training import (
    ContractTraining as ContractTraining,
)
from services.protocol.messages.training import (
    EpochMetrics as EpochMetrics,
)
from services.protocol.messages.training import (
    FeaturePartyRef as FeaturePartyRef,
)
from services.protocol.messages.training import (
    JobState as JobState,
)
from services.protocol.messages.training import (
    TrainingSpec as TrainingSpec,
)
from services.protocol.messages.training import (
    TrainingStatus as TrainingStatus,
)
from services.protocol.messages.training import (
    WarmStart as WarmStart,
)
