"""Dependencies of the party API, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.party.settings import PartySettings
from services.party.state import PartyState
from services.party.training.runs import TrainingRuns
from services.protocol import codec
from services.protocol.errors import UnsupportedMediaType
from services.protocol.version import TENSOR_MEDIA_TYPE


async def _state(request: Request) -> PartyState:
    state: PartyState = request.app.state.party
    return state


async def _settings(request: Request) -> PartySettings:
    settings: PartySettings = request.app.state.party.settings
    return settings


async def _runs(request: Request) -> TrainingRuns:
    runs: TrainingRuns = request.app.state.runs
    return runs


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_media(request: Request) -> None:
    media = _media(request)
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"this endpoint takes application/json, not {media or 'no content type'}",
            detail={"expected": "application/json"},
        )


async def _frame(request: Request) -> codec.Frame:
    media = _media(request)
    if media != TENSOR_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"this endpoint takes {TENSOR_MEDIA_TYPE}, not {media or 'no content type'}",
            detail={"expected": TENSOR_MEDIA_TYPE},
        )
    return codec.decode(await request.body())


StateDep = Annotated[PartyState, Depends(_state)]
SettingsDep = Annotated[PartySettings, Depends(_settings)]
RunsDep = Annotated[TrainingRuns, Depends(_runs)]
FrameDep = Annotated[codec.Frame, Depends(_frame)]
JSON_BODY = Depends(_json_media)
"""Route dependency of endpoints with a JSON body: any other content type is a 415."""
