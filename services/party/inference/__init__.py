"""Joint inference at the label party: a deployed model's predictions, metered (issue 6)."""

from services.party.inference.rows import RequestRows, RowSchema
from services.party.inference.service import PredictCaller, Predictor
from services.party.inference.serving import ServingModel

__all__ = ["PredictCaller", "Predictor", "RequestRows", "RowSchema", "ServingModel"]
