"""The report opens in a real browser; rerunning the evaluation on CPU gives byte-identical metric tables.

Both use the session-wide ``tiny_run`` (tests/conftest.py) and never modify it: the report goes to a temporary
path, and the rerun happens in a copy. The browser is the system Chromium driven by chromedriver through the
W3C WebDriver HTTP API (stdlib urllib; no extra Python dependency): it clicks through Snakemake's single-page
report like a user and inspects the DOM after the JavaScript ran.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
CHROMIUM = Path("/usr/bin/chromium")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,1000"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver element key

pytestmark = pytest.mark.workflow


def smk(workdir, *args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _chromium():
    """Path of the system Chromium, installing the Debian packages when absent; skip when impossible."""
    if CHROMIUM.exists() and shutil.which("chromedriver"):
        return CHROMIUM
    if shutil.which("apt-get") is None:
        pytest.skip("no /usr/bin/chromium and no apt-get to install it (Debian packages chromium, chromium-driver)")
    proc = subprocess.run(["apt-get", "install", "-y", "chromium", "chromium-driver"], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 or not CHROMIUM.exists() or not shutil.which("chromedriver"):
        pytest.skip(f"could not install chromium with apt-get (exit {proc.returncode}): {proc.stderr[-300:]}")
    return CHROMIUM


class Browser:
    """Headless Chromium driven through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self, profile):
        chromium = _chromium()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        self.proc = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                if self._req("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                if time.time() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": str(chromium), "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}}}}
        self.sid = self._req("POST", "/session", caps)["value"]["sessionId"]

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def cmd(self, method, path, body=None):
        return self._req(method, f"/session/{self.sid}{path}", body)["value"]

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": []})

    def find(self, xpath, timeout=20):
        """Elements matching ``xpath``, waiting up to ``timeout`` s for at least one."""
        deadline = time.time() + timeout
        while True:
            found = self.cmd("POST", "/elements", {"using": "xpath", "value": xpath})
            if found or time.time() > deadline:
                return [e[ELEMENT] for e in found]
            time.sleep(0.2)

    def click(self, xpath):
        found = self.find(xpath)
        assert found, f"nothing to click at {xpath}; page text: {self.js('return document.body.innerText')[:2000]}"
        self.cmd("POST", f"/element/{found[0]}/click", {})

    def enter_frame(self, xpath):
        found = self.find(xpath)
        assert found, f"no frame at {xpath}"
        self.cmd("POST", "/frame", {"id": {ELEMENT: found[0]}})

    def quit(self):
        try:
            self._req("DELETE", f"/session/{self.sid}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _text(label):
    return f"//*[normalize-space(text())='{label}']"


def _open_result(browser, html, category, subcategory, name):
    """Like a user: open the report, click the category, the subcategory, then the result's view button."""
    browser.get(html.resolve().as_uri())
    browser.click(_text(category))
    browser.click(_text(subcategory))
    browser.click(f"//tr[.//*[contains(normalize-space(text()), '{name}')]]//a")
    browser.enter_frame("//iframe")


@pytest.fixture(scope="module")
def report_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    smk(tiny_run, "--configfile", str(REPO / "config/test.yaml"), "--report", str(out / "report.zip"))
    with zipfile.ZipFile(out / "report.zip") as z:
        z.extractall(out / "unzipped")
    return out / "unzipped"


def test_report_opens_in_chromium_with_metric_table_and_video(report_dir, tmp_path):
    html = next(report_dir.rglob("report.html"))
    names = {p.name for p in report_dir.rglob("*") if p.is_file()}
    assert {"metrics.tsv", "metrics_table.html", "sub-01_preview.mp4", "sub-01_preview.html", "provenance.yaml",
            "annotation_template.csv", "test001.png", "provenance.html"} <= names
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.get(html.resolve().as_uri())
        assert browser.find(_text("4. Metrics")), browser.js("return document.documentElement.outerHTML")[:3000]
        text = browser.js("return document.body.innerText")  # rendered by the app's JavaScript
        for category in ("1. Preprocessing", "2. Training", "3. Reconstructions", "5. Provenance", "6. Qualitative"):
            assert category in text, category
        # the metric table: an HTML table with the long table's columns and one row per metric variant
        _open_result(browser, html, "4. Metrics", "Tables", "metrics_table.html")
        header = browser.js("return Array.from(document.querySelectorAll('#metric-table thead th'))"
                            ".map(th => th.innerText)")
        assert header == ["subject", "method", "metric", "variant", "value", "ci_low", "ci_high", "n", "p"]
        metrics = set(browser.js("return Array.from(document.querySelectorAll('#metric-table tbody tr'))"
                                 ".map(tr => tr.children[2].innerText)"))
        assert {"ssim_rgb_uniform", "psnr", "hue_cos", "nway_topk", "two_way_ident", "voxel_r"} <= metrics
        assert browser.find("//table[@id='wilcoxon-table']") and browser.find("//table[@id='published-table']")
        # a video preview: a <video> element that holds the embedded MP4
        _open_result(browser, html, "3. Reconstructions", "sub-01", "sub-01_preview.html")
        assert browser.find("//video[@id='preview']"), browser.js("return document.body.innerHTML")[:2000]
        for _ in range(50):  # the browser decodes it: metadata loaded, frame size known, no media error
            video = browser.js("const v = document.querySelector('video#preview');"
                               "return {src: v.src.slice(0, 22), error: v.error ? v.error.code : null,"
                               " ready: v.readyState, width: v.videoWidth, duration: v.duration}")
            if video["ready"] >= 1 or video["error"]:
                break
            time.sleep(0.2)
        assert video["src"] == "data:video/mp4;base64,", video
        assert video["error"] is None and video["width"] > 0 and video["duration"] > 0, video
        # the provenance page: commit, evaluation models and input checksums as tables
        _open_result(browser, html, "5. Provenance", "5. Provenance", "provenance.html")
        models = browser.js("return Array.from(document.querySelectorAll('#provenance-models tbody tr'))"
                            ".map(tr => tr.children[0].innerText)")
        assert {"evaluate:clip", "evaluate:image_classifier", "evaluate:video_classifier", "evaluate:lpips_alex"} \
            <= set(models)
        assert browser.find("//table[@id='provenance-inputs']//td[contains(text(), 'bold.nii.gz')]")
        assert "dataset" in browser.js("return document.querySelector('#provenance-config').innerText")
    finally:
        browser.quit()


# A CPU rerun from scratch giving byte-identical metric tables is checked by
# tests/workflow/test_crash_recovery.py, whose last run recomputes decoding, generation, metrics and tables.
