"""The console in a real browser (Debian's chromium driven by Playwright) against a real
registry process: the acceptance walk of issue 19, an axe-core check of every page, keyboard use.

The job's progress page follows a real training: the PCB maker and the paste supplier run as
party services (uvicorn, loopback) on 1,500 generated boards under a small plain-mode contract,
and ``splice job start`` trains it while the page is open.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from rich.console import Console

from services.cli import console_people
from services.cli.console_people import make_people, wait_for_ctrl_c
from services.registry.api.revenue_formats import from_xlsx
from tests.console.live import (
    Live,
    Parties,
    chromium,
    metered_predictions,
    onboard,
    parties,
    registry,
    start_training,
)
from tests.console.util import PASSWORD

pytestmark = pytest.mark.e2e
AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text(encoding="utf-8")
PEOPLE = {
    "paste-admin@solvia.example": ("paste", "admin"),
    "pcb-admin@lumen.example": ("pcb", "admin"),
    "oem-engineer@nordwerk.example": ("oem", "engineer"),
    "oem-finance@nordwerk.example": ("oem", "finance"),
}


class Axe:
    """axe-core, injected through the DevTools protocol (the pages' CSP stays in force)."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, page: Page) -> None:
        """No serious or critical violation on the page as it is now."""
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.evaluate("(source) => { (0, eval)(source); }", AXE)
        result: dict[str, Any] = page.evaluate(
            "async () => await window.axe.run(document, {resultTypes: ['violations']})"
        )
        bad = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not bad, f"axe on {page.url}: {bad}"
        self.checked.append(page.url)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    chromium()
    with registry(tmp_path_factory.mktemp("console-live")) as running:
        onboard(running)
        for email, (org, role) in PEOPLE.items():
            running.person(org, email, role)
        yield running


@pytest.fixture(scope="module")
def services(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    # 50 epochs: about 5 s of training at a quiet machine, so the 1 s poll sees several epoch
    # counts even when CI is loaded (20 epochs, 2 s: one CI run saw a single one)
    with parties(live, tmp_path_factory.mktemp("console-parties"), epochs=50) as running:
        yield running


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(chromium()), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def person(browser: Browser, live: Live, email: str) -> tuple[BrowserContext, Page]:
    """A new browser context (its own cookies) signed in as ``email``; CSP violations fail."""
    context = browser.new_context(base_url=live.url, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    # script errors and CSP refusals ("Refused to ..."); a 4xx page the test asks for on purpose
    # is logged as a failed resource load, which is not one
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).not_to_have_text("Sign in to Splice")
    page.errors = errors  # type: ignore[attr-defined]
    return context, page


def test_the_partnership_in_browsers(browser: Browser, live: Live, services: Parties) -> None:
    started = time.monotonic()
    axe = Axe()
    # Sign-in page and the public pages
    context = browser.new_context(base_url=live.url)
    page = context.new_page()
    for path in ("/console/login", "/console/join", "/console/register"):
        page.goto(path)
        axe.check(page)
    # the check can fail: an image without a text alternative is a critical violation
    page.evaluate("() => document.querySelector('main').append(document.createElement('img'))")
    with pytest.raises(AssertionError, match="image-alt"):
        axe.check(page)
    context.close()

    # A supplier admin signs in, invites a person and registers a client.
    supplier, page = person(browser, live, "paste-admin@solvia.example")
    axe.check(page)
    page.get_by_role("link", name="People").click()
    axe.check(page)
    page.get_by_label("E-mail").fill("quality@solvia.example")
    page.get_by_label("Role", exact=True).select_option("engineer")
    page.get_by_role("button", name="Invite").click()
    expect(page.locator("#invitation-code")).to_have_text(re.compile(r"^spl_uin_"))
    axe.check(page)
    page.get_by_role("link", name="OAuth clients").click()
    # a key file over the registry's 1 MiB body limit: the form again, the error on its field
    clients = page.locator("table tbody tr").count()
    page.get_by_label("Public key set (private_key_jwt)").check()
    big = {"name": "keys.json", "mimeType": "application/json", "buffer": b" " * (1 << 20)}
    page.get_by_label("Public key set (JWKS file, JSON)").set_input_files(big)  # type: ignore[arg-type]
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#e-jwks")).to_contain_text("larger than the 1048576 bytes")
    expect(page.locator("table tbody tr")).to_have_count(clients)  # nothing registered
    page.get_by_label("Name").fill("paste party service")
    page.get_by_label(re.compile("^party:call")).check()
    page.get_by_label(re.compile("^usage:write")).check()
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#new-client-secret")).to_have_text(re.compile(r"^spl_cs_"))
    axe.check(page)
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("cell", name="user.invited").first).to_be_visible()
    axe.check(page)
    page.get_by_role("link", name="Account").click()
    axe.check(page)

    # The OEM creates a contract (the example's parties and terms, a small model) and proposes it.
    oem, page = person(browser, live, "oem-engineer@nordwerk.example")
    page.get_by_role("link", name="Contracts").click()
    axe.check(page)
    page.goto("/console/users")  # not for an engineer: the error page
    expect(page.locator("#error-code")).to_have_text("forbidden")
    axe.check(page)
    page.goto("/console/contracts")
    page.get_by_role("link", name="New contract").click()
    expect(page.locator("#checks")).to_contain_text("valid contract")  # checked on load
    axe.check(page)
    editor = page.get_by_label("Contract (YAML)")
    assert "amount: '0.05'" in services.contract
    editor.fill(services.contract.replace("amount: '0.05'", "amount: '-0.05'"))
    editor.press("End")  # a key press: htmx checks as you type
    expect(page.locator("#checks")).to_contain_text("commercial.price_per_prediction.amount")
    editor.fill(services.contract)
    editor.press("End")
    expect(page.locator("#checks")).to_contain_text("valid contract")
    page.get_by_role("button", name="Create the draft").click()
    expect(page.locator("#contract-state")).to_have_text("draft")
    contract_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name=re.compile("^Propose version 1")).click()
    expect(page.locator("#contract-state")).to_have_text("proposed")
    digest = page.locator("#digest-1").inner_text()
    axe.check(page)

    # Both parties sign in their own browsers: the PCB maker by keyboard only.
    pcb, pcb_page = person(browser, live, "pcb-admin@lumen.example")
    pcb_page.goto(f"/console/contracts/{contract_id}")
    expect(pcb_page.get_by_text(digest).first).to_be_visible()
    pcb_page.locator("body").focus()
    for _ in range(60):
        pcb_page.keyboard.press("Tab")
        if pcb_page.evaluate("() => document.activeElement.textContent") == "Accept as pcb":
            break
    else:
        raise AssertionError("the accept button cannot be reached with Tab")
    pcb_page.keyboard.press("Enter")
    expect(pcb_page.locator("#contract-state")).to_have_text("proposed")
    supplier_page = supplier.pages[0]
    supplier_page.goto(f"/console/contracts/{contract_id}")
    supplier_page.get_by_role("button", name="Accept as paste").click()
    expect(supplier_page.locator("#contract-state")).to_have_text("active")
    page.reload()
    expect(page.locator("#contract-state")).to_have_text("active")

    # A job's page follows the training while it runs (htmx polling, no reload).
    services.wait_ready()
    r = live.api.post("/v1/jobs", json={"contract_id": contract_id}, headers=live.auth("pcb"))
    job_id = r.json()["id"]
    page.goto(f"/console/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("created")
    axe.check(page)
    page.evaluate("() => { window.notReloaded = true; }")
    training = start_training(live, services.urls, contract_id, job_id)
    seen: list[tuple[str, str, int]] = []  # (status, epochs, points of the auc curve) as shown
    deadline = time.monotonic() + 60
    while training.poll() is None or not seen or seen[-1][0] != "finished":
        assert time.monotonic() < deadline, f"the training did not finish: {seen}"
        shown = (
            page.locator("#job-status").inner_text(),
            page.locator("#job-epochs").inner_text(),
            page.locator("#curve-auc circle").count(),
        )
        if not seen or shown != seen[-1]:
            seen.append(shown)
        time.sleep(0.1)
    stdout, stderr = training.communicate(timeout=30)
    assert training.returncode == 0, stderr[-2000:]
    status = json.loads(stdout[stdout.index("{") :])
    assert status["state"] == "finished" and len(status["history"]) == services.epochs, status
    running = [s for s in seen if s[0] == "training"]
    # seen to change while the job trained (two epoch counts at least, the curve growing; the
    # 1 s poll sees four or more at a quiet machine), then finish
    assert len({epochs for _, epochs, _ in running}) >= 2, seen
    points = [n for _, _, n in running]
    assert points == sorted(points) and len(set(points)) >= 2, seen
    assert seen[-1][1] == f"{services.epochs} of at most {services.epochs}", seen
    expect(page.locator("#curve-auc circle")).to_have_count(services.epochs)
    assert page.evaluate("() => window.notReloaded === true"), "the page was reloaded"
    axe.check(page)
    page.get_by_role("link", name="Jobs").click()
    axe.check(page)
    page.get_by_role("link", name="Models").click()
    axe.check(page)

    # Finance downloads the month's workbook: the API's, byte for byte, totals and all.
    metered_predictions(live, contract_id, [120, 30])
    finance, fin_page = person(browser, live, "oem-finance@nordwerk.example")
    fin_page.get_by_role("link", name="Usage & revenue").click()
    axe.check(fin_page)
    with fin_page.expect_download() as download:
        fin_page.locator("#download-xlsx").click()
    mine = Path(download.value.path()).read_bytes()
    period = time.strftime("%Y-%m", time.gmtime())
    api = live.api.get(
        f"/v1/reports/revenue?period={period}&format=xlsx", headers=live.auth("oem", "reports:read")
    )
    assert api.status_code == 200 and mine == api.content
    totals = [r for r in from_xlsx(mine) if r["row_type"] == "total"]
    assert [str(t["amount"]) for t in totals] == ["7.50"]  # 150 predictions at 0.05 EUR
    expect(fin_page.locator("#total-EUR")).to_have_text("7.50 EUR")

    # Sign-out revokes: the old cookie opens nothing.
    cookies = fin_page.context.cookies()
    fin_page.get_by_role("button", name="Sign out").click()
    expect(fin_page.get_by_role("heading", level=1)).to_have_text("Sign in to Splice")
    stale = browser.new_context(base_url=live.url)
    stale.add_cookies(cookies)  # type: ignore[arg-type]
    stale_page = stale.new_page()
    stale_page.goto("/console/")
    expect(stale_page.get_by_role("heading", level=1)).to_have_text("Sign in to Splice")

    for ctx in (supplier, oem, pcb, finance, stale):
        for p in ctx.pages:
            assert not getattr(p, "errors", []), p.errors  # type: ignore[attr-defined]
        ctx.close()
    assert len(axe.checked) == 18  # every page the walk visits
    # a wall-time sanity bound, not a speed figure: 108 s on 2026-12-05's ~2x slower machine
    assert time.monotonic() - started < 240


def test_demo_sign_ins_open_the_console(
    live: Live, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``splice demo --keep-running`` prints: the console URL and a working sign-in for
    each organisation, until Ctrl-C."""
    orgs = {"lumen-pcb": live.orgs["pcb"], "solvia-paste": live.orgs["paste"]}
    people = make_people(live.url, live.admin, orgs, finance_of="lumen-pcb")
    assert [(p.org, p.role) for p in people] == [
        ("lumen-pcb", "admin"),
        ("solvia-paste", "admin"),
        ("lumen-pcb", "finance"),
    ]

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(console_people.time, "sleep", interrupted)
    out = Console(record=True, width=60)  # a narrow terminal cuts nothing
    wait_for_ctrl_c(out, live.url, people)
    text = out.export_text()
    assert f"{live.url}/console/" in text and "stopping" in text
    for p in people:
        assert p.email in text and p.password in text
    context = browser.new_context(base_url=live.url)
    page = context.new_page()
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(people[-1].email)
    page.get_by_label("Password").fill(people[-1].password)
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_role("link", name="Usage & revenue")).to_be_visible()
    context.close()
