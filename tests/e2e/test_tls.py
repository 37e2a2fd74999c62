"""TLS and mutual TLS between every service: real registry and party processes on loopback.

A throwaway CA is made at test time; the registry and both parties serve HTTPS with its
certificates and require client certificates of it (mutual TLS), and the parties' outgoing calls
(to each other and to the registry) trust only that CA and present their own client certificates.
A governed run trains a small joint model over it; plain HTTP, a client that does not trust the
CA and a client without a certificate are all refused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts.job import training_spec
from contracts.loader import read_contract
from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.cli.demo import KINDS, OEM, PASTE, PCB
from services.cli.governed import Governance, onboard, start_registry
from services.cli.tls import LocalCa
from services.protocol.messages import (
    JobState,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.peers import PartyClient
from services.protocol.registry_client import RegistryClient
from services.protocol.tls import client_context
from services.scenario.pcb_paste import generate
from tests.e2e.contracts import small_contract

pytestmark = pytest.mark.e2e


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[tuple[Governance, LocalCa, Path]]:
    ca = LocalCa.create(tmp_path / "tls", mutual=True)
    gov, admin = start_registry(tmp_path / "registry", ca)
    try:
        contract = small_contract(tmp_path, epochs=1, hidden=8, width=4)
        asyncio.run(_agree(gov, admin, contract))
        yield gov, ca, contract
    finally:
        gov.stop()


async def _agree(gov: Governance, admin: str, contract: Path) -> None:
    """Onboard, agree the contract, open a job (token clients closed: no stray sockets)."""
    await onboard(gov, admin, KINDS)
    async with httpx.AsyncClient(verify=gov.verify) as http:

        def client(org: str, scope: str) -> RegistryClient:
            auth = _auth(gov, http, org, gov.url, scope)
            return RegistryClient(gov.url, auth=auth, verify=gov.verify)

        async with client(OEM, "contracts:write") as oem:
            created = await oem.create_contract_yaml(contract.read_bytes())
            digest = (await oem.propose(created.id)).versions[-1].digest
        gov.contract_id = created.id
        for party, org in (("pcb", PCB), ("paste", PASTE)):
            async with client(org, "contracts:sign") as signer:
                await signer.sign(gov.contract_id, party, digest)
        async with client(PCB, "jobs:run") as label:
            gov.job_id = (await label.create_job(gov.contract_id)).id


def _auth(
    gov: Governance, http: httpx.AsyncClient, org: str, audience: str, scope: str
) -> BearerAuth:
    o = gov.orgs[org]
    creds = ClientCredentials(f"{gov.url}/oauth/token", o.client_id, o.secret)
    return BearerAuth(TokenSource(creds, http), audience, scope)


def _refused(url: str, verify: ssl.SSLContext | bool) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", timeout=5, verify=verify)


def test_governed_training_over_mutual_tls(
    governed: tuple[Governance, LocalCa, Path], tmp_path: Path
) -> None:
    gov, ca, contract = governed
    assert gov.url.startswith("https://")
    files = generate(tmp_path / "data", boards=400, lots=50, seed=5)
    ports = {"pcb": free_port(), "paste": free_port()}
    with LocalCluster(tmp_path / "cluster", tls=ca) as cluster:
        urls = {n: cluster.url(p) for n, p in ports.items()}
        cluster.start_all(
            [
                PartyLaunch("pcb", files.pcb_maker, env=gov.party_env(PCB, urls["pcb"])),
                PartyLaunch(
                    "paste",
                    files.paste_supplier,
                    files.key_paste,
                    env=gov.party_env(PASTE, urls["paste"]),
                ),
            ],
            ports=ports,
        )
        assert all(u.startswith("https://") for u in urls.values())
        spec = training_spec(
            read_contract(contract),
            job_id=gov.job_id,
            contract_id=gov.contract_id,
            feature_urls={"paste": urls["paste"]},
        )
        status = asyncio.run(_train(gov, urls["pcb"], spec))
        assert status.state is JobState.FINISHED, status.error

        for url in (gov.url, *urls.values()):
            # plain HTTP to a TLS port: no answer
            _refused(url.replace("https://", "http://"), True)
            # a client that trusts only the system store rejects the throwaway CA
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{url}/v1/health", timeout=5)
            # trusting the CA but presenting no client certificate: refused (mutual TLS)
            _refused(url, client_context(ca.ca_file))
            # with a client certificate of the CA: served
            assert httpx.get(f"{url}/v1/health", timeout=5, verify=gov.verify).status_code == 200


async def _train(gov: Governance, label_url: str, spec: TrainingSpec) -> TrainingStatus:
    async with httpx.AsyncClient(verify=gov.verify) as http:
        auth = _auth(gov, http, PCB, label_url, "jobs:run")
        async with PartyClient(label_url, timeout=60.0, auth=auth, verify=gov.verify) as label:
            status = await label.start_training(spec)
            while status.state not in (JobState.FINISHED, JobState.FAILED):
                await asyncio.sleep(0.2)
                status = await label.training(spec.job_id)
    return status
