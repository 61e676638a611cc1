"""Slider latency of `faceedit ui`: the server's handler alone, and a real browser round trip.

Run on the CPU machine, quiet, with Debian's ``chromium`` and ``chromium-driver`` and the
``ui`` and ``test`` extras installed::

    OMP_NUM_THREADS=1 python bench/scripts/ui_latency.py --out runs/ui_latency

Two measurements of one slider move with the cached latent (faces64, W+, the photo's
largest face; the edit is synthesised and pasted back, nothing is inverted again):

* ``handler``: ``faceedit.ui.Editor.edit`` in this process, what the server runs for a move;
* ``browser``: headless Chromium driven by Selenium clicks the smile slider of the page that
  ``faceedit ui`` serves from a subprocess; the time runs in the page from the press on the
  slider's track to the moment the edited photo's new image has loaded (the HTTP round
  trips, JPEG encoding and decoding included).

Prints a table (median, 90th percentile, max in ms) and writes ``ui_latency.json`` to
``--out``. The browser helpers here (:func:`start_server`, :class:`Page`) also drive the
end-to-end test ``tests/test_ui_browser.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FACEEDIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FACEEDIT_CHROMEDRIVER", "/usr/bin/chromedriver")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *args: str, env: dict | None = None, log=None) -> subprocess.Popen:
    """``faceedit ui --port PORT ARGS...`` in a subprocess (this interpreter's faceedit), with Ctrl-C's
    default action: started from a background job of a shell, this process and its children have
    SIGINT ignored, and :func:`stop_server`'s SIGINT would then wait for nothing."""
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from faceedit.cli import main; main()")
    cmd = [sys.executable, "-c", code, "ui", "--port", str(port), *args]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Seconds until ``url`` answers 200; raises if the server exits or the time runs out."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"faceedit ui exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stop the server as Ctrl-C would (SIGINT) and return its exit code (killed after ``timeout`` s: -9)."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def chrome(download_dir: Path, width: int = 1400, height: int = 1900):
    """Headless Debian Chromium under Selenium, downloads into ``download_dir`` (nothing is fetched)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


class Page:
    """The `faceedit ui` page in a Selenium driver, by the element ids the page sets (``fe-*``)."""

    def __init__(self, driver, url: str):
        self.d = driver
        self.url = url

    def open(self, timeout: float = 60.0) -> None:
        self.d.get(self.url)
        self.wait(lambda: self.d.find_elements("css selector", "#fe-photo input[type=file]"), timeout,
                  "the upload box")

    def wait(self, cond, timeout: float, what: str):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, poll_frequency=0.05).until(lambda d: cond(), f"waiting for {what}")

    def text(self, elem_id: str) -> str:
        return self.d.find_element("id", elem_id).text

    def upload(self, path) -> None:
        """Put a file in the photo box (the one shown there first taken out, as a person would)."""
        if not self.d.find_elements("css selector", "#fe-photo input[type=file]"):
            self.d.find_element("css selector", "#fe-photo button[aria-label='Clear']").click()
            self.wait(lambda: self.d.find_elements("css selector", "#fe-photo input[type=file]"), 10,
                      "the emptied upload box")
        self.d.find_element("css selector", "#fe-photo input[type=file]").send_keys(str(Path(path).resolve()))

    def wait_status(self, *needles: str, timeout: float = 90.0) -> str:
        """The status line once it holds one of ``needles``."""
        self.wait(lambda: any(n in self.text("fe-status") for n in needles), timeout, f"status {needles}")
        return self.text("fe-status")

    def img_src(self, elem_id: str) -> str:
        imgs = self.d.find_elements("css selector", f"#{elem_id} img")
        return imgs[0].get_attribute("src") if imgs else ""

    def slider(self, name: str):
        return self.d.find_element("css selector", f"#fe-s-{name} input[type=range]")

    def slider_value(self, name: str) -> float:
        return float(self.d.find_element("css selector", f"#fe-s-{name} input[type=number]").get_attribute("value"))

    def move_slider(self, name: str, fraction: float) -> None:
        """Click the slider's track at ``fraction`` of its width (0 = left end), as a person would."""
        from selenium.webdriver.common.action_chains import ActionChains

        el = self.slider(name)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        w = el.size["width"]
        ActionChains(self.d).move_to_element_with_offset(el, int((fraction - 0.5) * (w - 16)), 0).click().perform()

    def settle(self, image: str, quiet: float = 0.3, timeout: float = 30.0) -> str:
        """Wait until ``image`` shows a loaded picture that has not changed for ``quiet`` seconds."""
        js = f"const i = document.querySelector('#{image} img'); return i && i.complete && i.naturalWidth ? i.src : ''"
        seen = {"src": None, "since": time.perf_counter()}

        def stable():
            src = self.d.execute_script(js)
            if src != seen["src"]:
                seen.update(src=src, since=time.perf_counter())
            return bool(src) and time.perf_counter() - seen["since"] >= quiet

        self.wait(stable, timeout, f"a still picture in #{image}")
        return seen["src"]

    def watch(self, slider: str, image: str) -> None:
        """Arm an in-page timer: the next press on the slider to ``image``'s next loaded new picture
        (call :meth:`settle` first, so that the picture it starts from is the one on screen)."""
        self.d.execute_script("""
            const [slider, image] = arguments;
            const range = document.querySelector(`#fe-s-${slider} input[type=range]`);
            const old = (document.querySelector(`#${image} img`) || {}).src || '';
            const w = {t0: null, t1: null};
            window.__fe = w;
            document.addEventListener('pointerdown', (e) => {
                if (w.t0 === null && range.contains(e.target)) w.t0 = performance.now();
            }, {capture: true});
            (function poll() {
                const img = document.querySelector(`#${image} img`);
                if (img && img.src && img.src !== old && img.complete && img.naturalWidth > 0 && w.t0 !== null) {
                    w.t1 = performance.now(); return;
                }
                requestAnimationFrame(poll);
            })();
        """, slider, image)

    def watched_ms(self, timeout: float = 30.0) -> float:
        """Milliseconds the armed timer measured (waits for it)."""
        self.wait(lambda: self.d.execute_script("return window.__fe && window.__fe.t1 !== null"), timeout,
                  "the edited image")
        return float(self.d.execute_script("return window.__fe.t1 - window.__fe.t0"))

    def click(self, elem_id: str) -> None:
        el = self.d.find_element("id", elem_id)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()

    def download_links(self, elem_id: str = "fe-downloads") -> dict:
        """``{file name: link element}`` of a file list."""
        return {a.get_attribute("download"): a for a in self.d.find_elements("css selector", f"#{elem_id} a[download]")}

    def download(self, suffix: str, folder: Path, timeout: float = 30.0) -> Path:
        """Click the download link whose file name ends with ``suffix``; wait for the file in ``folder``."""
        links = {n: a for n, a in self.download_links().items() if n.endswith(suffix)}
        if not links:
            raise AssertionError(f"no download ending {suffix!r}: {sorted(self.download_links())}")
        name, link = sorted(links.items())[0]
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
        link.click()
        target = Path(folder) / name
        self.wait(lambda: target.is_file() and not Path(str(target) + ".crdownload").exists(), timeout,
                  f"the download of {name}")
        return target

    def screenshot(self, path) -> Path:
        """A full-page screenshot (the window grown to the page's height)."""
        h = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(self.d.get_window_size()["width"], max(900, min(int(h) + 40, 4000)))
        self.d.execute_script("window.scrollTo(0, 0)")
        self.d.save_screenshot(str(path))
        return Path(path)


def _stats(ms: list) -> dict:
    import numpy as np

    a = np.asarray(ms, np.float64)
    return {"n": int(a.size), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "max_ms": float(a.max())}


def handler_latency(photo: Path, moves: int) -> dict:
    """``Editor.edit`` with the cached latent, ``moves`` times at changing smile strengths."""
    from faceedit.ui import Editor, UiSettings

    ed = Editor(UiSettings(model="faces64"))
    try:
        s = ed.new_session()
        ed.open_photo(s, photo)
        ed.invert(s, None, "faces64", "w+")
        ed.edit(s, {"smile": 1.0})  # warm-up
        ms = []
        for k in range(moves):
            t0 = time.perf_counter()
            ed.edit(s, {"smile": -10.0 + 20.0 * (k % 9) / 8})
            ms.append(1000 * (time.perf_counter() - t0))
        return {**_stats(ms), "photo_size": list(s.photo.shape[1::-1])}
    finally:
        ed.close()


def browser_latency(photo: Path, moves: int, work: Path) -> dict:
    """Slider clicks in headless Chromium against `faceedit ui` in a subprocess."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "server.log", "wb") as log:
        proc = start_server(port, "--model", "faces64", env={"FACEEDIT_HOME": str(work / "home")}, log=log)
        try:
            start_s = wait_ready(url, proc)
            d = chrome(work)
            try:
                page = Page(d, url)
                page.open()
                page.upload(photo)
                page.wait_status("inverted", timeout=120)
                ms = []
                fractions = [0.55 + 0.05 * (k % 8) for k in range(moves + 1)]
                for f in fractions:
                    page.settle("fe-edited")
                    page.watch("smile", "fe-edited")
                    page.move_slider("smile", f)
                    ms.append(page.watched_ms())
                return {**_stats(ms[1:]), "server_start_s": start_s}
            finally:
                d.quit()
        finally:
            stop_server(proc)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photo", type=Path, default=REPO / "examples" / "astronaut.jpg")
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/ui_latency"))
    ap.add_argument("--skip-browser", action="store_true")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = {"handler": handler_latency(a.photo, a.moves)}
    if not a.skip_browser:
        rows["browser"] = browser_latency(a.photo, a.moves, a.out / "browser")
    import torch

    rec = {"photo": str(a.photo), "model": "faces64", "space": "w+", "moves": a.moves, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(), "results": rows}
    (a.out / "ui_latency.json").write_text(json.dumps(rec, indent=2))
    print(f"slider latency, {a.photo.name}, faces64 W+, {a.moves} moves, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| measured | median ms | p90 ms | max ms |")
    print("| --- | --- | --- | --- |")
    for k, r in rows.items():
        print(f"| {k} | {r['median_ms']:.0f} | {r['p90_ms']:.0f} | {r['max_ms']:.0f} |")
    return rec


if __name__ == "__main__":
    main()
