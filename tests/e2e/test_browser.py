"""End to end in a real browser: headless Debian Chromium, fake microphone from a WAV file."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from tests.conftest import ARTIFACTS
from voxfleet.bench.speech import speak

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"


def chromium_args(wav_path: str) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav_path}", "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
    ]


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    # Two seconds of quiet (the greeting plays), the question, then quiet; Chromium loops it.
    pcm = np.concatenate([np.zeros(48000 * 4, np.int16), speak("What is the capital of France?"),
                          np.zeros(48000 * 6, np.int16)])
    path = tmp_path_factory.mktemp("audio") / "question.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(pcm.tobytes())
    return str(path)


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_website_call_shows_greeting_and_ttfw(assistant_server, question_wav, transport):
    """The official Pipecat client in the page: SmallWebRTC, or the WebSocket transport with
    Pipecat's protobuf frames (?transport=websocket)."""
    from playwright.sync_api import expect, sync_playwright

    suffix = "" if transport == "webrtc" else "-websocket"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(question_wav))
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        try:
            page.goto(assistant_server.url + ("/" if transport == "webrtc" else "/?transport=websocket"))
            expect(page.locator("#agent option")).to_have_count(1)
            assert page.locator("body").get_attribute("data-transport") == transport
            page.screenshot(path=str(ARTIFACTS / f"website-idle{suffix}.png"))
            page.click("#talk")
            greeting = page.locator(".line.bot p").first
            expect(greeting).to_contain_text("offline voice assistant", timeout=30_000)
            expect(page.locator("#ttfw")).to_have_attribute("data-ready", "1", timeout=10_000)
            ttfw_ms = int(page.locator("body").get_attribute("data-ttfw-ms"))
            assert 0 < ttfw_ms < 30_000
            expect(page.locator("#state-text")).to_contain_text("Live")
            # The browser's microphone (the WAV) reaches Whisper and comes back as the user line.
            expect(page.locator(".line.user p").first).to_contain_text("France", timeout=30_000)
            page.wait_for_timeout(2500)
            page.screenshot(path=str(ARTIFACTS / f"website-call{suffix}.png"))
            session_id = page.locator("#session").get_attribute("title")
            page.click("#talk")
            expect(page.locator("#talk-label")).to_have_text("Talk")
            with assistant_server.client() as http:
                assert http.get(f"/v1/sessions/{session_id}").json()["transport"] == transport
        finally:
            (ARTIFACTS / f"website-console{suffix}.log").write_text("\n".join(console))
            browser.close()


def test_dashboard_renders_real_sessions(assistant_server):
    """After the website call above, the operator dashboard shows it with its latencies: opened
    with the login link `voxfleet serve` printed at its first start, as an operator would."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args("/dev/null"))
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            page.goto(f"{assistant_server.url}/dashboard#key={assistant_server.key}")
            expect(page.locator("body")).to_have_attribute("data-loaded", "1", timeout=10_000)
            assert "key=" not in page.url  # the key leaves the address bar at once
            expect(page.locator("#recent tr[data-id]").first).to_be_visible()
            expect(page.locator("#capacity")).to_contain_text("holds")
            expect(page.locator("#pools")).to_contain_text("assistant")
            expect(page.locator("#ttfw-stats")).to_contain_text("ms")
            assert page.locator("#ttfw-plot canvas").count() == 1
            page.locator("#recent tr[data-id] a").first.click()
            expect(page.locator("#detail-body")).to_contain_text("time to first word", timeout=5_000)
            expect(page.locator("#detail-body .transcript")).to_contain_text("offline voice assistant")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()

async def test_website_shows_queue_position_when_all_agents_are_busy(tmp_path, question_wav):
    """One slot, taken by an aiortc caller: the page says the user is #1, then connects."""
    import asyncio

    from playwright.async_api import async_playwright, expect

    from tests.e2e.test_capacity import tone_server
    from voxfleet.bench.webrtc_client import WebRTCCaller
    from voxfleet.transports.ice import advertise_addresses

    advertise_addresses(["127.0.0.1"])
    server = tone_server(tmp_path, capacity_cpu_millis=500, queue_max=3, queue_wait_s=30.0)
    occupant = WebRTCCaller(server.url, local_address="127.0.0.2")  # another caller, from elsewhere
    try:
        await occupant.connect()
        await occupant.wait_first_audio(timeout=20)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=chromium_args(question_wav))
            page = await browser.new_page(viewport={"width": 1200, "height": 760})
            try:
                await page.goto(server.url + "/")
                await expect(page.locator("#agent option")).to_have_count(1, timeout=10_000)
                await page.click("#talk")
                await expect(page.locator("#state-text")).to_contain_text("you are #1 in line", timeout=10_000)
                await page.screenshot(path=str(ARTIFACTS / "website-queued.png"))
                await occupant.close()
                try:
                    await expect(page.locator("#state-text")).to_contain_text("Live", timeout=20_000)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nserver log:\n{server.log_tail(40)}") from exc
                await expect(page.locator("#ttfw")).to_have_attribute("data-ready", "1", timeout=10_000)
            finally:
                await browser.close()
    finally:
        await occupant.close()
        server.stop()
        await asyncio.sleep(0)
