"""Resources (RFC 8707) and the clients that serve them: who may introspect a token.

A party service's URL is the audience of the tokens its callers present. Its organisation's
client claims that URL as a resource (the party does so itself when it starts checking tokens);
from then on introspection (RFC 7662) answers a token for that audience to that client only,
and ``active: false`` to every other client. One holder per resource: an organisation cannot
claim a resource another organisation's live client holds (409 ``resource_taken``, a squat the
operator sees in the audit log); within an organisation a claim moves the resource to the
claiming client (a party re-registered with a new client).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode
from services.registry.models import OAuthClient, utcnow
from services.registry.models_oauth import OAuthResource
from services.registry.store import audit

MAX_RESOURCES_PER_CLIENT = 16


def resources_of(session: Session, client_id: str) -> list[str]:
    """The resources a client holds, sorted."""
    found = session.scalars(
        select(OAuthResource.resource).where(OAuthResource.client_id == client_id)
    )
    return sorted(found)


def claim(session: Session, client: OAuthClient, resource: str, *, actor: str) -> list[str]:
    """Make ``client`` the holder of ``resource``; the client's resources after the claim.

    :class:`Conflict` (``resource_taken``) when a live client of another organisation holds it,
    or when the client already holds :data:`MAX_RESOURCES_PER_CLIENT` others.
    """
    held = session.scalar(
        select(OAuthResource).where(OAuthResource.resource == resource).with_for_update()
    )
    if held is not None and held.client_id == client.client_id:
        return resources_of(session, client.client_id)
    if held is not None and held.org_id != client.org_id:
        holder = session.get(OAuthClient, held.client_id)
        if holder is not None and holder.revoked_at is None:
            raise Conflict(
                f"resource {resource} is served by another organisation's client",
                code=ErrorCode.RESOURCE_TAKEN,
                detail={"resource": resource},
            )
    if len(resources_of(session, client.client_id)) >= MAX_RESOURCES_PER_CLIENT:
        raise Conflict(
            f"a client serves at most {MAX_RESOURCES_PER_CLIENT} resources",
            code=ErrorCode.RESOURCE_TAKEN,
            detail={"limit": MAX_RESOURCES_PER_CLIENT},
        )
    previous = None if held is None else held.client_id
    if held is None:
        session.add(
            OAuthResource(
                resource=resource,
                client_id=client.client_id,
                org_id=client.org_id,
                claimed_at=utcnow(),
            )
        )
    else:
        held.client_id, held.org_id, held.claimed_at = client.client_id, client.org_id, utcnow()
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="oauth_client.resource_claimed",
        subject=f"oauth_client:{client.client_id}",
        payload={"resource": resource, "org_id": client.org_id, "previous_client": previous},
    )
    return resources_of(session, client.client_id)


def holder(session: Session, audiences: Iterable[str]) -> set[str]:
    """The clients holding any of ``audiences`` as a resource."""
    wanted = sorted(set(audiences))
    if not wanted:
        return set()
    found = session.scalars(
        select(OAuthResource.client_id).where(OAuthResource.resource.in_(wanted))
    )
    return set(found)
