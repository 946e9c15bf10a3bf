"""The planners' console in a real headless Chromium, against the real flow, broker, Redis,
executor and reference WMS: a proposal that needs approval is seen, explained, approved once,
and carried out; a planner of other sites, a forged form and a replayed form change nothing.
Screenshots of the main pages go to out/test-output/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.console_auth import hash_password
from adapters.kafka import read_topic
from adapters.lab.devservices import free_port, wait_for_port
from adapters.lab.flowproc import ROOT, FlowHarness, start_command, stop_process
from tests.integration.test_execute import reference_wms
from tests.support.helpers import unique_schema

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("STOCKSHIFT_TEST_OUTPUT", ROOT / "out" / "test-output")) / "screenshots"
HOUR = 3_600_000
PASSWORD = "a long test password"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def users_file(folder: Path) -> Path:
    digest = hash_password(PASSWORD)
    path = folder / "users.toml"
    path.write_text(
        "".join(
            f'[[users]]\nname = "{name}"\nrole = "{role}"\nsites = {sites}\n'
            f'password_hash = "{digest}"\n'
            for name, role, sites in (
                ("pat", "planner", '["B"]'),
                ("zoe", "planner", '["Z"]'),
                ("ada", "admin", '["*"]'),
            )
        )
    )
    return path


def needs_approval_events(t0: int) -> list[tuple[str, dict[str, Any]]]:
    """A at 300 and B at 91 sell one an hour for 30 h (past the warm-up, short of the 48 h a
    receiver must be observed to be trusted); damage leaves B short: A -> B needs approval."""
    events = [
        (
            "inventory",
            {
                "event_id": f"c-{s}",
                "ts": t0,
                "sku": "SKU-1",
                "site": s,
                "type": "snapshot",
                "on_hand": q,
            },
        )
        for s, q in (("A", 300), ("B", 91))
    ]
    for h in range(30):
        for s in ("A", "B"):
            events.append(
                (
                    "pos",
                    {
                        "event_id": f"s-{s}-{h}",
                        "ts": t0 + h * HOUR + HOUR // 2,
                        "sku": "SKU-1",
                        "site": s,
                        "qty": 1,
                    },
                )
            )
    events.append(
        (
            "inventory",
            {
                "event_id": "d1",
                "ts": t0 + 30 * HOUR,
                "sku": "SKU-1",
                "site": "B",
                "type": "adjustment",
                "delta": -40,
            },
        )
    )
    return events


@pytest.fixture
def world(
    kafka_brokers: str, redis_url: str, postgres_dsn: str, topic_prefix: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test-tools installs Debian's package as root)")
    flow = FlowHarness(
        kafka_brokers,
        topic_prefix,
        tmp_path,
        STOCKSHIFT_REDIS_URL=redis_url,
        STOCKSHIFT_REDIS_PREFIX=topic_prefix,
    )
    flow.start()
    wms_port, console_port = free_port(), free_port()
    env = {
        **flow.env,
        "STOCKSHIFT_WMS_URL": f"http://127.0.0.1:{wms_port}",
        "STOCKSHIFT_EXECUTE_POLL_INTERVAL_S": "0.2",
        "STOCKSHIFT_CONSOLE_USERS": str(users_file(tmp_path)),
        "STOCKSHIFT_CONSOLE_SECRET": "test-session-secret-0123456789",
        "STOCKSHIFT_CONSOLE_SECURE_COOKIES": "false",
        "STOCKSHIFT_CONSOLE_KEY_ID": "ops-1",
        "STOCKSHIFT_CONSOLE_PORT": str(console_port),
    }
    schema = unique_schema("console")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with reference_wms(postgres_dsn, schema, wms_port, ["A", "B"]):
            for command in ("execute", "console"):
                processes.append(start_command(command, env, tmp_path / f"{command}.log"))
            wait_for_port(console_port, processes[-1], timeout=60)
            yield {
                "flow": flow,
                "url": f"http://127.0.0.1:{console_port}",
                "wms_port": wms_port,
                "brokers": kafka_brokers,
                "prefix": topic_prefix,
                "tmp": tmp_path,
            }
    finally:
        for process in processes:
            stop_process(process)
        flow.stop()


def publish(flow: FlowHarness, events: list[tuple[str, dict[str, Any]]]) -> None:
    kinds: list[str] = []
    for kind, body in events:
        if kinds and kinds[-1] != kind:
            flow.producer.flush(10)
            flow.wait_live()
        flow.producer.produce(
            flow.prefix + kind, orjson.dumps(body), b"SKU-1", timestamp=body["ts"]
        )
        flow.last_ts = max(flow.last_ts, body["ts"])
        kinds.append(kind)
    flow.producer.flush(10)


def sign_in(page: Any, url: str, name: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")


def csrf_of(page: Any) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.content())
    assert match is not None
    return match.group(1)


def test_a_planner_approves_in_the_browser_and_the_transfer_is_carried_out(
    world: dict[str, Any],
) -> None:
    from playwright.sync_api import sync_playwright

    flow, url, prefix = world["flow"], world["url"], world["prefix"]
    import httpx

    wms = f"http://127.0.0.1:{world['wms_port']}"
    stock = [
        {"sku": "SKU-1", "site": "A", "on_hand": 270},
        {"sku": "SKU-1", "site": "B", "on_hand": 21},
    ]
    httpx.post(wms + "/_stock", json=stock).raise_for_status()
    publish(flow, needs_approval_events(int(time.time() * 1000) - 31 * HOUR))
    proposals = flow.records("proposals", 1, timeout=60)
    assert proposals and proposals[0]["status"] == "needs_approval"
    pid = proposals[0]["proposal_id"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        # A planner of other sites sees it but may not answer it.
        zoe = browser.new_page()
        sign_in(zoe, url, "zoe")
        zoe.wait_for_selector(f"a[href='/proposals/{pid}']", timeout=30_000)
        assert zoe.locator(f"#pick-{pid}").count() == 0
        forbidden = zoe.request.post(
            url + "/answer", form={"csrf": csrf_of(zoe), "ids": pid, "action": "approve"}
        )
        assert forbidden.status == 403
        # A forged form (no valid token) changes nothing either.
        forged = zoe.request.post(
            url + "/answer", form={"csrf": "forged", "ids": pid, "action": "approve"}
        )
        assert forged.status == 403
        # Pat owns B: sees it, reads why, approves it.
        pat = browser.new_page()
        sign_in(pat, url, "pat")
        pat.wait_for_selector(f"#pick-{pid}", timeout=30_000)
        pat.screenshot(path=str(SHOTS / "waiting.png"), full_page=True)
        pat.get_by_role("link", name="SKU-1").click()
        pat.wait_for_url(f"{url}/proposals/{pid}")
        assert "Move" in pat.content() and "low confidence" in pat.content()
        pat.screenshot(path=str(SHOTS / "why.png"), full_page=True)
        token = csrf_of(pat)
        pat.get_by_label("Note").fill("checked with the store")
        pat.get_by_role("button", name="Approve").focus()
        pat.keyboard.press("Enter")  # keyboard-usable
        pat.wait_for_url(re.compile(r".*/\?message=1\+approved.*"))
        # The same form again (a replay, or a double click): refused, nothing sent.
        again = pat.request.post(
            url + "/answer", form={"csrf": token, "ids": pid, "action": "approve"}
        )
        assert again.status == 409 and "already approved by pat" in again.text()
        # A crafted page number ("²" passes str.isdigit, not int) is page 1, not a 500.
        assert pat.request.get(url + "/?page=%C2%B2").status == 200
        for name in ("exceptions", "network"):
            pat.goto(f"{url}/{name}")
            pat.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        guess_passwords_and_send_a_huge_form(browser.new_page(), url)
        browser.close()
    answers = read_topic(
        world["brokers"],
        prefix + "shipments",
        5,
        timeout=10,
        keep=lambda m: (
            orjson.loads(m.value()).get("proposal_id") == pid
            and orjson.loads(m.value())["type"] in ("transfer_approved", "transfer_rejected")
        ),
    )
    assert [orjson.loads(m.value())["event_id"] for m in answers] == [f"answer:{pid}"]
    decisions = flow.records(
        "decisions", 50, timeout=20, keep=lambda r: r.get("proposal_id") == pid
    )
    outcomes = {r["outcome"] for r in decisions}
    assert {"needs_approval", "planner_approved", "approved"} <= outcomes  # the flow took it
    audit = next(r for r in decisions if r["outcome"] == "planner_approved")
    assert (audit["actor"], audit["note"]) == ("pat", "checked with the store")
    # The executor picked it up: the WMS carried out the order, and the flow saw it arrive.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        orders = httpx.get(wms + "/_orders").json()
        if any(o["reference"] == pid and o["status"] == "received" for o in orders):
            break
        time.sleep(0.5)
    assert [(o["reference"], o["status"]) for o in orders] == [(pid, "received")]
    received = flow.records(
        "decisions",
        1,
        timeout=30,
        keep=lambda r: r.get("proposal_id") == pid and r["outcome"] == "transfer_received",
    )
    assert received


def guess_passwords_and_send_a_huge_form(page: Any, url: str) -> None:
    """Ten wrong passwords for a name from one address, then sign-in is refused without a
    check (429, Retry-After), the right password included; another name still signs in.
    A form past 1 MiB is refused (413) before it is read."""
    page.goto(url + "/login")
    token = csrf_of(page)

    def sign_in_as(name: str, password: str) -> Any:
        form = {"csrf": token, "name": name, "password": password}
        return page.request.post(url + "/login", form=form, max_redirects=0)

    assert [sign_in_as("zoe", f"guess {i}").status for i in range(10)] == [401] * 10
    refused = sign_in_as("zoe", PASSWORD)
    assert refused.status == 429 and 0 < int(refused.headers["retry-after"]) <= 900
    assert sign_in_as("ada", PASSWORD).status == 303
    assert sign_in_as("x" * (2 << 20), "p").status == 413


def test_the_terminal_commands_list_and_answer_once(
    kafka_brokers: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """stockshift pending / reject / approve: the console's code path, from a shell."""
    flow = FlowHarness(
        kafka_brokers,
        topic_prefix,
        tmp_path,
        STOCKSHIFT_REDIS_URL=redis_url,
        STOCKSHIFT_REDIS_PREFIX=topic_prefix,
    )
    flow.start()
    try:
        publish(flow, needs_approval_events(int(time.time() * 1000) - 31 * HOUR))
        pid = flow.records("proposals", 1, timeout=60)[0]["proposal_id"]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "flows.cli", *args],
                env=flow.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )

        listed = cli("pending")
        assert listed.returncode == 0 and pid in listed.stdout and "1 waiting" in listed.stdout
        rejected = cli("reject", pid, "--reason", "store is closing", "--actor", "sam")
        assert rejected.returncode == 0 and f"{pid}: rejected by sam" in rejected.stdout
        again = cli("approve", pid, "--actor", "kim")
        assert again.returncode == 1 and "already rejected by sam" in again.stderr
        audit = flow.records(
            "decisions", 1, timeout=20, keep=lambda r: r.get("outcome") == "planner_rejected"
        )
        assert audit and audit[0]["proposal_id"] == pid, audit
        after = cli("pending")
        # Rejected, it waits no more (the flow may propose again for the same need: a new id).
        assert after.returncode == 0 and pid not in after.stdout
        events = read_topic(
            kafka_brokers,
            topic_prefix + "shipments",
            5,
            timeout=10,
            keep=lambda m: orjson.loads(m.value()).get("proposal_id") == pid,
        )
        assert [orjson.loads(m.value())["type"] for m in events] == ["transfer_rejected"]
        released = flow.records(
            "decisions",
            1,
            timeout=30,
            keep=lambda r: r.get("proposal_id") == pid and r["outcome"] == "reservation_released",
        )
        assert released and released[0]["reason"] == "rejected"
    finally:
        flow.stop()
