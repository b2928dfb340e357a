"""The demo in a real browser: `mu-llama demo` serves on 127.0.0.1, headless Chromium (Debian chromium +
chromium-driver, driven by selenium) uploads a 10-s clip through the page's file input, waits for its caption,
asks two questions, looks at the emotion plot and generates music, photographing each flow.

Screenshots (look, caption, ask, feel, generate, full page) and timings.json go to $MU_LLAMA_TEST_ARTIFACTS
(default: pytest's tmp dir); with MU_LLAMA_UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/.
timings.json (wall clock, seconds; informative, never asserted):
  cold_page_load_to_caption_s  the server's first page (default example preselected; the 10-s clip is uploaded as
                               soon as the file input shows) -> the 10-s clip's caption: first imports, model load
  warm_page_load_to_caption_s  a new page `/?example=none` on the warm server -> upload a 10-s clip -> its caption
Model: a tiny random MuLlama saved in a temp dir (fast; its text is gibberish), or MU_LLAMA_TEST_DEMO_MODEL
(e.g. "untrained:smollm2", as used for the committed screenshots). Generator: a tiny random one unless
MU_LLAMA_TEST_DEMO_GENERATOR names a checkpoint. Skips cleanly without chromium, chromedriver or selenium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "mu_llama" / "assets" / "examples" / "bach_bwv66.6_organ.ogg"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CLIP_NAME = "bach_chorale_10s.wav"      # first page load: stereo 44.1 kHz WAV
CLIP2_NAME = "mozart_sonata_10s.flac"    # second page load (warm server): mono 22.05 kHz FLAC
WAIT = float(os.environ.get("MU_LLAMA_TEST_DEMO_WAIT", "240"))  # seconds any one step may take (CPU is shared)


def _require_browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("needs selenium (pip install selenium)")
    try:
        import streamlit  # noqa: F401
    except ImportError:
        pytest.skip("needs streamlit (pip install 'mu-llama[demo]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ.get("MU_LLAMA_TEST_ARTIFACTS") or tmp_path_factory.mktemp("demo_artifacts"))
    (d / "screenshots").mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory, artifacts):
    """`mu-llama demo` on a free port; yields its base URL; the process is stopped afterwards."""
    _require_browser()
    import soundfile as sf

    from mu_llama.audio import load_audio

    tmp = tmp_path_factory.mktemp("demo_browser")
    model = os.environ.get("MU_LLAMA_TEST_DEMO_MODEL")
    generator = os.environ.get("MU_LLAMA_TEST_DEMO_GENERATOR")
    if not model or not generator:
        import torch

        from mu_llama.generate import GeneratorConfig, MusicTokenLM, save_generator
        from mu_llama.model import MuLlama, MuLlamaConfig

        if not model:
            model = str(MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama",
                                                    injection_layers=2)).save_pretrained(tmp / "model"))
        if not generator:
            torch.manual_seed(0)
            lm = MusicTokenLM(GeneratorConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=256))
            generator = str(save_generator(lm, tmp / "generator"))
    clip = tmp / CLIP_NAME  # exactly 10.0 s each; the app resamples and mono-mixes uploads
    wave = load_audio(EXAMPLE, 44100, duration=10.0)
    sf.write(clip, np.stack([wave, 0.5 * wave], axis=1), 44100, subtype="PCM_16")
    sf.write(tmp / CLIP2_NAME, load_audio(EXAMPLE.with_name("mozart_k545_piano.flac"), 22050, duration=10.0), 22050)
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    url = f"http://127.0.0.1:{port}"
    with open(artifacts / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mu_llama.cli.main", "demo", "--port", str(port),
                                 "--address", "127.0.0.1", "--model", model, "--generator", generator],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"demo server did not come up: {(artifacts / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
            yield {"url": url, "clip": clip, "clip2": tmp / CLIP2_NAME, "model": model}
        finally:
            proc.terminate()  # `mu-llama demo` exec'd streamlit, so this reaches the server itself
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1500,3000", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, what: str, predicate, timeout: float = WAIT):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def safe(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:  # streamlit re-renders elements as the script reruns
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(safe)
    except Exception as e:
        failure = getattr(driver, "failure_png", None)
        if failure:
            driver.save_screenshot(str(failure))
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from e


def _section(driver, key: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f".st-key-{key}")
    return found[0] if found else None


def _runs(driver) -> int:
    """Number of the last completed script run: the app ends every run with an element of class st-key-run_done_<n>."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, '[class*="st-key-run_done_"]')
    return max((int(c.split("st-key-run_done_")[1].split()[0]) for c in (e.get_attribute("class") for e in found)),
               default=0)


def _text(driver, key: str) -> str:
    el = _section(driver, key)
    return el.text if el is not None else ""


def _shoot(driver, key: str, out: Path) -> Path:
    path = out / f"{key}.png"
    el = _section(driver, key)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", el)
    loaded = "return Array.from(arguments[0].querySelectorAll('img')).every(i => i.complete && i.naturalWidth > 0);"
    _wait(driver, f"the images of {key}", lambda d: d.execute_script(loaded, _section(d, key)), timeout=30)
    time.sleep(0.3)
    el.screenshot(str(path))
    return path


def test_demo_in_browser(server, browser, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots, timings = artifacts / "screenshots", {"model": server["model"]}
    browser.failure_png = artifacts / "failure.png"
    t0 = time.monotonic()
    browser.get(server["url"])
    upload = _wait(browser, "the file input", lambda d: d.find_element(By.CSS_SELECTOR, '.st-key-upload input[type="file"]'))
    timings["page_to_file_input_s"] = time.monotonic() - t0
    t_upload, runs = time.monotonic(), _runs(browser)
    upload.send_keys(str(server["clip"]))

    # upload / look: the clip's facts come from the uploaded file (44.1 kHz stereo, 10.0 s)
    _wait(browser, "the uploaded clip's look section", lambda d: "10.0 s" in _text(d, "look") and "44.1 kHz" in _text(d, "look"))
    # caption: its footnote names the clip, so a stale caption of the preselected example never counts
    _wait(browser, "the caption of the uploaded clip", lambda d: CLIP_NAME in _text(d, "caption") and "computed in" in _text(d, "caption"))
    now = time.monotonic()
    timings["cold_page_load_to_caption_s"] = now - t0  # server's first page: imports, model load, example caption
    timings["cold_upload_to_caption_s"] = now - t_upload
    caption_text = _section(browser, "caption").find_element(By.CSS_SELECTOR, "blockquote").text
    assert caption_text.strip(), "empty caption"
    _wait(browser, "the run to finish", lambda d: _runs(d) > runs)
    for key in ("look", "caption", "feel"):
        _shoot(browser, key, shots)
    feel = _text(browser, "feel")
    assert "caption text" in feel and "V=" in feel, feel  # the caption's VAD estimate is plotted

    # ask: one typed question, then one suggested question; both turns stay on the page
    box = _wait(browser, "the chat input", lambda d: _section(d, "ask").find_element(By.CSS_SELECTOR, "textarea"))
    runs = _runs(browser)
    box.send_keys("What instruments can you hear?")
    box.send_keys(Keys.ENTER)
    messages = '.st-key-ask [data-testid="stChatMessage"]'
    _wait(browser, "the first answer", lambda d: _runs(d) > runs and len(d.find_elements(By.CSS_SELECTOR, messages)) >= 2)
    runs = _runs(browser)
    _section(browser, "suggest_1").find_element(By.TAG_NAME, "button").click()
    _wait(browser, "the second answer", lambda d: _runs(d) > runs and len(d.find_elements(By.CSS_SELECTOR, messages)) >= 4)
    texts = [m.text for m in browser.find_elements(By.CSS_SELECTOR, messages)]
    assert "What instruments can you hear?" in texts[0] and "What is the mood of this music?" in texts[2], texts
    _shoot(browser, "ask", shots)

    # generate from the caption + VAD sliders, then the result is re-captioned on screen
    t_gen, runs = time.monotonic(), _runs(browser)
    _section(browser, "gen_button").find_element(By.TAG_NAME, "button").click()
    _wait(browser, "the generated music and its caption", lambda d: _runs(d) > runs and _section(d, "recaption") is not None)
    timings["generate_and_recaption_s"] = time.monotonic() - t_gen
    gen = _section(browser, "generate")
    assert gen.find_elements(By.CSS_SELECTOR, "audio"), "no audio player for the result"
    assert "Download WAV" in gen.text and "Download MIDI" in gen.text
    assert gen.find_elements(By.CSS_SELECTOR, "img"), "no valence-arousal plot of the result"
    _shoot(browser, "generate", shots)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", browser.find_element(By.TAG_NAME, "h1"))
    browser.save_screenshot(str(shots / "page.png"))
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), "a traceback is on the page"

    # a new page on the warm server (model loaded), opened with nothing preselected: page load -> 10-s upload -> caption
    t0 = time.monotonic()
    browser.get(server["url"] + "/?example=none")
    upload = _wait(browser, "the file input", lambda d: d.find_element(By.CSS_SELECTOR, '.st-key-upload input[type="file"]'))
    upload.send_keys(str(server["clip2"]))
    _wait(browser, "the caption of the second clip", lambda d: CLIP2_NAME in _text(d, "caption") and "computed in" in _text(d, "caption"))
    timings["warm_page_load_to_caption_s"] = time.monotonic() - t0
    assert "22.05 kHz" in _text(browser, "look") and "1 / flac" in _text(browser, "look")

    (artifacts / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(timings))
    if os.environ.get("MU_LLAMA_UPDATE_SCREENSHOTS") == "1":
        docs = ROOT / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, docs / png.name)
