"""Screenshots of the review desk for the README: the inbox and a document, on the five seed documents.

    .venv/bin/python docs/screenshots.py [--model models/taggers/default] [--out docs/img]

Starts the desk on 127.0.0.1 (a free port) with MODEL, a throw-away label store with no base
data (so the chips show the model's own predictions) and a throw-away inbox; uploads seeds/*.txt
through the page; on the seed document whose first disagreement between the model and the seed
annotations (data/seed_annotations.jsonl, labelled by reading) comes earliest, clicks the chips
that turn the model's labels into the annotated ones, as a reviewer would; saves desk-inbox.png
and desk-document.png (quantised to 256 colours to stay small). Needs chromium, chromium-driver
and fonts-noto-cjk (apt) and selenium (the dev extra); runs offline.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, work: Path) -> tuple[str, object]:
    import uvicorn

    from inference.server.app import create_app
    from inference.server.desk import DeskConfig
    from policylens.cli.desk import TrainingBackend
    from training.store import LabelStore

    backend = TrainingBackend(LabelStore(work / "store", base_sources=[]), None)
    app = create_app(model, poll_seconds=0, desk_backend=backend, desk_config=DeskConfig(data_dir=work / "desk"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 300
    while not server.started:
        if time.time() > deadline:
            sys.exit("the desk did not start within 5 minutes")
        time.sleep(0.2)
    return f"http://127.0.0.1:{port}", server


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=zh-CN", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def save(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    try:
        from PIL import Image
    except ImportError:
        return
    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def first_disagreement(base: str, only: str | None) -> tuple[str, int, list[str]]:
    """(inbox key, paragraph index, annotated labels) of the earliest body paragraph, over the seed
    documents (or `only`), whose predicted labels differ from its seed annotation."""
    import json
    import urllib.request

    gold = {}
    for line in (REPO / "data" / "seed_annotations.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        gold[(row["doc_id"], row["text"])] = row["labels"]
    found = []
    for row in json.load(urllib.request.urlopen(base + "/desk/api/docs")):
        if only and row["id"] != only:
            continue
        doc = json.load(urllib.request.urlopen(f"{base}/desk/api/docs/{row['key']}"))
        body = [p for p in doc["paragraphs"] if p["kind"] == "body"]
        for rank, p in enumerate(body):
            labels = gold.get((row["id"], p["text"]))
            if labels is not None and set(labels) != set(p["predicted"]):
                found.append((rank, row["key"], p["index"], labels))
                break
    if not found:
        sys.exit("the model agrees with every seed annotation: nothing to correct on the screenshot")
    _, key, index, labels = min(found)
    return key, index, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "taggers" / "default")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--document", default=None, help="The seed document to show (default: see above).")
    args = parser.parse_args()
    if not (args.model / "policylens.json").exists():
        sys.exit(f"{args.model}: no tagger there (train one with `make run` or pass --model)")

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    seeds = sorted((REPO / "seeds").glob("*.txt"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="policylens-shots-") as tmp:
        base, server = start_server(args.model, Path(tmp))
        driver = browser(1280, 860)
        try:
            wait = WebDriverWait(driver, 600, poll_frequency=0.2)
            driver.get(base + "/")
            driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in seeds))
            driver.find_element(By.ID, "upload").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#documents tbody tr")) == len(seeds))
            table = driver.find_element(By.ID, "documents")
            bottom = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return r.bottom + window.scrollY;", table)
            driver.set_window_size(1280, int(min(max(860, bottom + 140), 2200)))  # every document in the picture
            save(driver, args.out / "desk-inbox.png")
            driver.set_window_size(1280, 860)
            print(f"wrote {args.out / 'desk-inbox.png'}")

            key, index, gold = first_disagreement(base, args.document)
            driver.get(f"{base}/doc/{key}")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#paragraphs .para")))
            para = driver.find_element(By.ID, f"p-{index}")
            shown = set((para.get_attribute("data-labels") or "").split())
            for label in sorted(shown ^ set(gold)):  # one click per label that differs
                before = para.get_attribute("data-version")
                para.find_element(By.CSS_SELECTOR, f'.chip.tag[data-label="{label}"]').click()
                wait.until(lambda d: para.get_attribute("data-version") != before and "busy" not in para.get_attribute("class"))
            print(f"corrected {key} paragraph {index} to the seed annotation {gold}")
            # tall enough to show the summary, the chips and the corrected paragraph in one picture
            bottom = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return r.bottom + window.scrollY;", para)
            driver.set_window_size(1280, int(min(max(860, bottom + 160), 2200)))
            driver.execute_script("window.scrollTo(0, 0)")
            save(driver, args.out / "desk-document.png")
            print(f"wrote {args.out / 'desk-document.png'}")
        finally:
            driver.quit()
            server.should_exit = True


if __name__ == "__main__":
    main()
