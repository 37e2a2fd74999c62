"""How a party applies each change of the registry's revocation feed (unit level; the end to end
timing is tests/e2e/test_revocation_push.py): what it refuses from then on, what it asks the
registry again, which open streams it closes, and what it leaves alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.party.auth import Authorizer, ContractStanding
from services.party.revocations import OpenStreams, RevocationFeed


class Stream:
    def __init__(self, **claims: str) -> None:
        self.claims: dict[str, Any] | None = claims
        self.closed: str | None = None

    async def close(self, reason: str) -> None:
        self.closed = reason


def _feed() -> tuple[RevocationFeed, Authorizer, OpenStreams]:
    async def never(*_: object) -> ContractStanding:
        raise AssertionError("not asked in this test")

    authorizer = Authorizer(issuer="i", audience="a", jwks=None, check=never, check_ttl=30)  # type: ignore[arg-type]
    streams = OpenStreams()
    feed = RevocationFeed(SimpleNamespace(authorizer=authorizer), streams)  # type: ignore[arg-type]
    return feed, authorizer, streams


def _cache(authorizer: Authorizer, jti: str, client: str, org: str) -> None:
    authorizer.live.put(jti, True)
    authorizer._holders[jti] = (client, org)


async def test_each_change_reaches_only_what_it_concerns() -> None:
    feed, auth, streams = _feed()
    _cache(auth, "t1", "c1", "o1")
    _cache(auth, "t2", "c2", "o2")
    _cache(auth, "t3", "c3", "o2")
    active = ContractStanding(True, "label", "feature", True)
    for key in (("k1", "o1", "j"), ("k1", "o2", "j"), ("k2", "o2", None)):
        auth.standing.put(key, active)
    s1, s2, s3 = (
        Stream(jti="t1", client_id="c1", org_id="o1", contract_id="k1"),
        Stream(jti="t2", client_id="c2", org_id="o2", contract_id="k2"),
        Stream(jti="t9", client_id="c9", org_id="o9", contract_id="k9"),
    )
    for s in (s1, s2, s3):
        streams.add(s)

    await feed.apply({"kind": "token_revoked", "jti": "t1", "action": "access_token.revoked"})
    assert auth.live.get("t1") is False and auth.live.stale("t1") is False  # refused, even offline
    assert s1.closed == "token revoked" and s2.closed is None

    await feed.apply({"kind": "client_revoked", "client_id": "c2", "org_id": "o2"})
    assert auth.live.get("t2") is None and auth.live.get("t3") is True  # c3 is another client
    assert s2.closed == "client revoked"

    await feed.apply({"kind": "organisation_suspended", "org_id": "o2"})
    assert auth.live.get("t3") is None  # every token of the organisation is asked about again
    assert auth.standing.get(("k1", "o1", "j")) is active  # o1's standing is kept
    assert auth.standing.get(("k1", "o2", "j")) is None

    assert auth.standing.get(("k2", "o2", None)) is None
    auth.standing.put(("k2", "o1", None), active)
    await feed.apply({"kind": "contract_changed", "contract_id": "k1", "action": "contract.agreed"})
    assert auth.standing.get(("k1", "o1", "j")) is None  # asked again under k1 ...
    assert auth.standing.get(("k2", "o1", None)) is active  # ... not under another contract
    assert s3.closed is None and len(streams) == 1  # an amendment closes no stream

    await feed.apply(
        {"kind": "contract_changed", "contract_id": "k9", "action": "contract.suspended"}
    )
    assert s3.closed == "contract contract.suspended" and len(streams) == 0
    assert feed.applied == 5
