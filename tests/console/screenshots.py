"""Screenshots of the console's main pages for the README.

``python -m tests.console.screenshots docs/img``: a real registry with the demo's three
companies, the example contract agreed, a model version, metered predictions, and a job of a
small contract training for real at two party processes (the job page is taken mid-run);
Debian's chromium takes each page at 1280 px wide.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.console.live import (
    Live,
    chromium,
    finish_with_model,
    metered_predictions,
    onboard,
    parties,
    registry,
    start_training,
)
from tests.console.util import PASSWORD

EXAMPLE = Path(__file__).resolve().parents[2] / "contracts" / "examples" / "pcb-paste-quality.yaml"


def agree(live: Live, text: bytes = EXAMPLE.read_bytes()) -> str:
    """A contract (the example by default) created by the OEM, signed by both parties: its
    id."""
    r = live.api.post(
        "/v1/contracts",
        content=text,
        headers={**live.auth("oem"), "Content-Type": "application/yaml"},
    )
    contract_id = str(r.json()["id"])
    r = live.api.post(f"/v1/contracts/{contract_id}/propose", headers=live.auth("oem"))
    digest = r.json()["versions"][-1]["digest"]
    for org, party in (("pcb", "pcb"), ("paste", "paste")):
        body = {"party": party, "decision": "accept", "digest": digest}
        live.api.post(f"/v1/contracts/{contract_id}/sign", json=body, headers=live.auth(org))
    return contract_id


def sign_in(page: Page, email: str) -> None:
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, registry(Path(tmp)) as live:
        onboard(live)
        people = {
            "admin@solvia-paste.example": ("paste", "admin"),
            "engineer@nordwerk-automotive.example": ("oem", "engineer"),
            "finance@nordwerk-automotive.example": ("oem", "finance"),
            "admin@nordwerk-automotive.example": ("oem", "admin"),
        }
        for email, (org, role) in people.items():
            live.person(org, email, role)
        contract_id = agree(live)
        first = live.api.post(
            "/v1/jobs", json={"contract_id": contract_id}, headers=live.auth("pcb")
        )
        finish_with_model(live, first.json()["id"])
        metered_predictions(live, contract_id, [1200, 340, 95])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium()), args=["--no-sandbox"])
            shots: list[tuple[str, str, str]] = [
                ("", "/console/login", "login"),
                ("admin@solvia-paste.example", "/console/users", "people"),
                (
                    "engineer@nordwerk-automotive.example",
                    "/console/contracts/new",
                    "contract-editor",
                ),
                (
                    "engineer@nordwerk-automotive.example",
                    f"/console/contracts/{contract_id}",
                    "contract",
                ),
                ("engineer@nordwerk-automotive.example", "/console/models", "models"),
                ("finance@nordwerk-automotive.example", "/console/finance", "finance"),
                ("admin@nordwerk-automotive.example", "/console/audit", "audit"),
            ]
            for email, path, name in shots:
                context = browser.new_context(
                    base_url=live.url, viewport={"width": 1280, "height": 900}
                )
                page = context.new_page()
                if email:
                    sign_in(page, email)
                page.goto(path)
                time.sleep(0.5)  # htmx's first check of the editor
                page.screenshot(path=str(out / f"console-{name}.png"), full_page=False)
                context.close()
            # a job while it trains, for real: two party processes, a small contract
            with parties(live, Path(tmp) / "parties", epochs=30) as services:
                small = agree(live, services.contract.encode())
                services.wait_ready()
                job = live.api.post(
                    "/v1/jobs", json={"contract_id": small}, headers=live.auth("pcb")
                ).json()["id"]
                context = browser.new_context(
                    base_url=live.url, viewport={"width": 1280, "height": 900}
                )
                page = context.new_page()
                sign_in(page, "engineer@nordwerk-automotive.example")
                page.goto(f"/console/jobs/{job}")
                training = start_training(live, services.urls, small, job)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    shown = page.locator("#job-epochs").inner_text().split()[0]
                    if int(shown) >= services.epochs // 2:
                        break
                    time.sleep(0.2)
                page.screenshot(path=str(out / "console-job.png"), full_page=True)
                training.communicate(timeout=300)
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
