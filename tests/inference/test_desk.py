"""The review desk over HTTP (in-process TestClient, no browser): pages, uploads, corrections in the
label store, undo, two reviewers, the write token, limits, escaping, export, the to-review queue,
retraining with its gate report, promotion with a hot swap, and an inbox that survives a restart.

The world: the tiny random tagger registered as v0001 of a registry in tmp, a label store over
a small synthetic base, and a backend that retrains on the tiny backbone in seconds.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tiny_policy_texts import NONE, TOPICS

from inference.analysis import AggregateConfig
from inference.batch.chunk import analyze_chunk
from inference.predictor import Predictor
from inference.server.app import create_app
from inference.server.desk import DeskConfig
from policylens.cli.desk import REVIEW_SOURCE, TrainingBackend
from policylens.document import Document
from policylens.paths import DATA_DIR
from training.registry import Registry
from training.retrain import RetrainConfig
from training.store import LabelStore
from training.tagger import TaggerConfig

TOKEN = "desk-test-token"
HEADERS = {"X-Write-Token": TOKEN}
DOC = "\n".join([
    "关于支持中小企业和新型基础设施发展的通知",
    "一、总体要求",
    "工业和信息化部要加快推进制造业数字化转型，推进5G网络和数据中心等新型基础设施建设。",
    "国务院要培育一批专精特新中小企业，优化营商环境降低企业融资成本。",
    "二、重点任务",
    "有关部门要实施绿色制造工程推动节能降碳，严格控制钢铁、水泥等行业新增产能。",
    "重点企业要推动新能源汽车产业链协同创新，加强关键核心技术攻关。",
    "财政部要加大研发费用加计扣除力度，落实高新技术企业税收优惠政策。",
])


def light_predictor(model_dir: Path) -> Predictor:
    """The real Predictor with the lead-sentence summariser (no 470 MB sentence encoder in unit tests)."""
    from inference.summarize import Summarizer

    return Predictor(model_dir, summarizer=Summarizer())


def base_rows() -> list[dict]:
    rows = []
    for d in range(12):
        rows += [{"id": f"d{d}#{label}{i}", "doc_id": f"d{d}", "text": f"{text}（第{d}号）", "labels": [label]}
                 for label, texts in TOPICS.items() for i, text in enumerate(texts)]
        rows += [{"id": f"d{d}#n{i}", "doc_id": f"d{d}", "text": f"{text}（第{d}号）", "labels": []} for i, text in enumerate(NONE)]
    return rows


def make_world(root: Path, tagger_dir: Path, backbone_dir: Path) -> tuple[TrainingBackend, Path]:
    """Store + registry (the tiny tagger as v0001, promoted) + backend; returns it and the CURRENT pointer."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA_DIR / "taxonomy.json", root / "taxonomy.json")
    base = root / "base.jsonl"
    base.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in base_rows()), encoding="utf-8")
    store = LabelStore(root / "store", taxonomy_path=root / "taxonomy.json", base_sources=[base])
    registry = Registry(root / "registry")
    staged = root / "staged"
    shutil.copytree(tagger_dir, staged)
    registry.register(staged, {"parent": None, "data_version": "empty", "labels": store.taxonomy().ids,
                               "metrics": {}, "gate": {"promote": True}})
    registry.promote("v0001")
    tagger = TaggerConfig(backbone=str(backbone_dir), epochs=1, batch_size=8, learning_rate=3e-3, head_learning_rate=3e-3,
                          freeze_embeddings=False, freeze_layers=0, max_length=48, stride=12, num_threads=1,
                          encoder_with_b4=False)
    return TrainingBackend(store, registry, RetrainConfig(tagger=tagger)), registry.root / "CURRENT"


def desk_app(pointer: Path, backend: TrainingBackend | None, **config) -> object:
    return create_app(None, registry_pointer=pointer, poll_seconds=0, predictor_factory=light_predictor,
                      desk_backend=backend, desk_config=DeskConfig(**config))


def upload(client: TestClient, text: str | None = None, files: dict[str, bytes] | None = None, title: str | None = None,
           headers: dict = HEADERS) -> dict:
    body = {"files": [{"name": n, "data": base64.b64encode(d).decode()} for n, d in (files or {}).items()],
            "text": text, "title": title}
    response = client.post("/desk/api/upload", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return wait(client, response.json()["id"])


def wait(client: TestClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/desk/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def world(tiny_tagger_dir, tiny_backbone_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("desk")
    backend, pointer = make_world(root, tiny_tagger_dir, tiny_backbone_dir)
    return root, backend, pointer


@pytest.fixture(scope="module")
def client(world):
    root, backend, pointer = world
    app = desk_app(pointer, backend, write_token=TOKEN, data_dir=root / "desk", chunk_paragraphs=2)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def doc(client) -> dict:
    """The synthetic notice, uploaded as a .txt file and tagged; its document view."""
    job = upload(client, files={"notice.txt": DOC.encode("utf-8")})
    assert job["state"] == "done", job
    [key] = job["result"]
    return client.get(f"/desk/api/docs/{key}").json()


def body_index(doc: dict, n: int = 0) -> int:
    return [p["index"] for p in doc["paragraphs"] if p["kind"] == "body"][n]


def test_pages_render_offline_with_a_strict_content_security_policy(client, doc):
    for url in ("/", f"/doc/{doc['key']}", "/review", "/models"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
        html = response.text
        assert "http://" not in html and "https://" not in html, url  # every asset comes from this server
    assert client.get("/desk/static/desk.js").status_code == 200
    assert client.get("/desk/static/desk.css").status_code == 200
    inbox = client.get("/").text
    assert doc["title"] in inbox and f"/doc/{doc['key']}" in inbox


def test_an_uploaded_document_is_tagged_like_policylens_tag(client, doc, tiny_tagger_dir):
    predictor = light_predictor(tiny_tagger_dir)
    document = Document(id="notice", text=DOC, source="notice.txt")
    [(_, record)] = analyze_chunk(predictor, [("k", document)], summary=True)
    ours = client.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"]
    assert [p["text"] for p in ours] == [p["text"] for p in record["paragraphs"]]
    assert [p["kind"] for p in ours] == [p["kind"] for p in record["paragraphs"]]
    assert [p["predicted"] for p in ours] == [p["labels"] for p in record["paragraphs"]]
    for mine, theirs in zip(ours, record["paragraphs"]):
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-3)
    assert doc["model_version"] == predictor.version
    # the stored summary points at paragraphs, like the batch record's
    assert doc["summary"]["sentences"] and all(s["paragraph_id"].startswith("notice#") for s in doc["summary"]["sentences"])
    assert AggregateConfig()  # the default aggregation: domains in the list count body paragraphs
    rows = client.get("/desk/api/docs").json()
    row = next(r for r in rows if r["key"] == doc["key"])
    body = [p for p in ours if p["kind"] == "body"]
    assert row["paragraphs"] == len(body)
    assert row["counts"] == {d: sum(d in p["labels"] for p in body) for d in doc["domains"]}


def test_a_corpus_row_keeps_its_own_source_and_date_in_the_inbox(client):
    row = {"doc_id": "news-1", "source": "news", "date": "20221214", "title": "经济观察", "text": DOC}
    job = upload(client, files={"week.jsonl": json.dumps(row, ensure_ascii=False).encode()})
    assert job["state"] == "done", job
    [listed] = [r for r in client.get("/desk/api/docs").json() if r["id"] == "news-1"]
    assert listed["source"] == "news · week.jsonl" and listed["date"] == "20221214"


def test_a_test_split_document_says_so_before_it_is_corrected(tiny_tagger_dir, tiny_backbone_dir, tmp_path):
    backend, pointer = make_world(tmp_path, tiny_tagger_dir, tiny_backbone_dir)
    backend.registry.record_splits({"notice": "test", "other": "train"}, "v0001")
    assert backend.split_of("notice") == "test" and backend.split_of("other") == "train" and backend.split_of("new") is None
    with TestClient(desk_app(pointer, backend, write_token=TOKEN, data_dir=tmp_path / "desk")) as client:
        keys = {}
        for name in ("notice", "other"):
            job = upload(client, files={f"{name}.txt": DOC.encode()})
            assert job["state"] == "done", job
            [keys[name]] = [r["key"] for r in client.get("/desk/api/docs").json() if r["id"] == name]
        page = client.get(f"/doc/{keys['notice']}").text
        assert 'id="test-split-note"' in page and "policylens models move-doc notice --to train" in page
        assert 'id="test-split-note"' not in client.get(f"/doc/{keys['other']}").text
        backend.registry.move_document("notice", "train", "its corrections should train")  # the way out
        assert 'id="test-split-note"' not in client.get(f"/doc/{keys['notice']}").text


def test_progress_is_reported_chunk_by_chunk(client, tiny_tagger_dir):
    from inference.server.desk.pipeline import analyze

    text = "\n".join(f"第{i}条 有关部门要推进5G网络建设，支持中小企业发展（{i}）。" for i in range(9))
    calls, steps = [], []
    record = analyze(Document(id="nine", text=text), light_predictor(tiny_tagger_dir),
                     lambda fn: calls.append(1) or fn(), chunk=2, progress=lambda done, total: steps.append((done, total)))
    assert steps == [(0, 9), (2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]
    assert len(calls) == 6  # five chunks and the summary, each one call on the model thread
    assert len(record["paragraphs"]) == 9 and record["summary"]["sentences"]
    response = client.post("/desk/api/upload", json={"text": text, "title": "九条"}, headers=HEADERS)
    job = wait(client, response.json()["id"])
    assert job["state"] == "done" and (job["done"], job["total"]) == (9, 9)


def test_writes_need_the_token(client, doc):
    index = body_index(doc)
    body = {"doc": doc["key"], "index": index, "labels": ["sme"]}
    missing = client.post("/desk/api/correct", json=body)
    assert missing.status_code == 403 and "no write token was sent" in missing.json()["message"]
    wrong = client.post("/desk/api/correct", json=body, headers={"X-Write-Token": "not-the-token"})
    assert wrong.status_code == 403 and "the write token is wrong" in wrong.json()["message"]
    for url, payload in (("/desk/api/upload", {"text": "推进5G建设。"}), ("/desk/api/retrain", None),
                         ("/desk/api/models/promote", {"version": "v0001"}), ("/desk/api/models/rollback", None),
                         ("/desk/api/undo", {"doc": doc["key"], "index": index, "version": "x"})):
        response = client.post(url, json=payload)
        assert response.status_code == 403, url
    assert client.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"][index]["reviewed"] is False
    assert client.get("/desk/api/state").json()["token_required"] is True


def test_without_a_backend_or_when_read_only_the_desk_refuses_writes(world, tiny_tagger_dir):
    _, backend, pointer = world
    for app, reason in ((desk_app(pointer, None), "no label store"),
                        (desk_app(pointer, backend, read_only="listens on 0.0.0.0 without --write-token"), "0.0.0.0")):
        with TestClient(app) as client:
            response = client.post("/desk/api/upload", json={"text": "推进5G建设。"})
            assert response.status_code == 403 and reason in response.json()["message"]
            assert client.get("/").status_code == 200 and "read-only" in client.get("/").text


def test_a_correction_is_written_to_the_label_store_at_once(client, doc, world):
    _, backend, _ = world
    index = body_index(doc, 1)
    paragraph = doc["paragraphs"][index]
    before = len(backend.store.events())
    response = client.post("/desk/api/correct", json={"doc": doc["key"], "index": index, "labels": ["carbon", "5g"]},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    result = response.json()
    # on disk before the answer came back: a fresh store object reads it from the log
    fresh = LabelStore(backend.store.root, taxonomy_path=backend.store.taxonomy_path, base_sources=backend.store.base_sources)
    events = fresh.events()
    assert len(events) == before + 1
    event = events[-1]
    assert event["source"] == REVIEW_SOURCE and event["time"] and event["version"] == result["event"]["version"]
    [row] = event["rows"]
    assert row["labels"] == ["5g", "carbon"] and row["text"] == paragraph["text"]  # taxonomy order
    assert row["review"]["model_version"] == doc["model_version"] and row["review"]["predicted"] == paragraph["predicted"]
    assert {r["id"]: r for r in fresh.rows()}[row["id"]]["labels"] == ["5g", "carbon"]
    assert result["paragraph"]["labels"] == ["5g", "carbon"] and result["paragraph"]["origin"] == "review"
    # the page (reloaded) shows it
    view = client.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"][index]
    assert view["labels"] == ["5g", "carbon"] and view["reviewed"] and view["version"] == event["version"]
    html = client.get(f"/doc/{doc['key']}").text
    assert 'data-labels="5g carbon"' in html


def test_none_of_these_and_undo(client, doc, world):
    _, backend, _ = world
    index = body_index(doc, 2)
    key = doc["key"]
    first = client.post("/desk/api/correct", json={"doc": key, "index": index, "labels": []}, headers=HEADERS).json()
    assert first["paragraph"]["labels"] == [] and first["event"]["type"] == "add"
    second = client.post("/desk/api/correct", json={"doc": key, "index": index, "labels": ["sme"],
                                                     "seen": first["event"]["version"]}, headers=HEADERS).json()
    assert second["event"]["type"] == "correct" and second["overrode"] is None
    undo = client.post("/desk/api/undo", json={"doc": key, "index": index, "version": second["event"]["version"]},
                       headers=HEADERS)
    assert undo.status_code == 200 and undo.json()["paragraph"]["labels"] == []
    again = client.post("/desk/api/undo", json={"doc": key, "index": index, "version": first["event"]["version"]},
                        headers=HEADERS)
    assert again.status_code == 200
    view = again.json()["paragraph"]
    assert view["reviewed"] is False and view["labels"] == view["predicted"]  # back to the model's prediction
    stored = {r["id"] for r in backend.store.rows()}
    assert doc["paragraphs"][index]["id"] not in stored  # the paragraph left the training data again
    assert [e["type"] for e in backend.store.events()[-4:]] == ["add", "correct", "correct", "withdraw"]
    assert backend.store.verify() == []


def test_two_reviewers_are_both_recorded_and_the_last_one_wins_visibly(client, doc, world):
    _, backend, _ = world
    index = body_index(doc, 3)
    key = doc["key"]
    seen = client.get(f"/desk/api/docs/{key}").json()["paragraphs"][index]["version"]  # both pages show this
    alice = client.post("/desk/api/correct", json={"doc": key, "index": index, "labels": ["supply_chain"], "seen": seen},
                        headers=HEADERS).json()
    bob = client.post("/desk/api/correct", json={"doc": key, "index": index, "labels": ["sme"], "seen": seen},
                      headers=HEADERS).json()
    assert alice["overrode"] is None
    assert bob["overrode"]["labels"] == ["supply_chain"] and bob["overrode"]["version"] == alice["event"]["version"]
    rows = [r for e in backend.store.events()[-2:] for r in e["rows"]]
    assert [r["labels"] for r in rows] == [["supply_chain"], ["sme"]]  # both clicks are in the log
    view = client.get(f"/desk/api/docs/{key}/labels").json()[str(index)]
    assert view["labels"] == ["sme"] and view["version"] == bob["event"]["version"]  # the last one wins
    assert [r["labels"] for r in view["reviews"][-2:]] == [["supply_chain"], ["sme"]]
    # Alice's undo would now silently drop Bob's labels: refused
    late = client.post("/desk/api/undo", json={"doc": key, "index": index, "version": alice["event"]["version"]},
                       headers=HEADERS)
    assert late.status_code == 409 and "changed after this correction" in late.json()["message"]


def test_unknown_labels_documents_and_paragraphs_are_refused(client, doc):
    key = doc["key"]
    bad = client.post("/desk/api/correct", json={"doc": key, "index": body_index(doc), "labels": ["smart_mfg"]}, headers=HEADERS)
    assert bad.status_code == 400 and "smart_mfg" in bad.json()["message"]
    assert client.post("/desk/api/correct", json={"doc": key, "index": 999, "labels": []}, headers=HEADERS).status_code == 404
    assert client.post("/desk/api/correct", json={"doc": "nope-0000000000", "index": 0, "labels": []}, headers=HEADERS).status_code == 404
    assert client.get("/doc/nope-0000000000").status_code == 404


def test_upload_limits_and_bad_files_get_clear_errors(world, tiny_tagger_dir):
    _, backend, pointer = world
    app = desk_app(pointer, backend, write_token=TOKEN, max_upload_bytes=2000, max_files=2, max_paste_chars=50)
    with TestClient(app) as client:
        def post(body, **kw):
            return client.post("/desk/api/upload", json=body, headers=HEADERS, **kw)

        b64 = lambda data: base64.b64encode(data).decode()
        big = post({"files": [{"name": "big.txt", "data": b64("五".encode() * 900)}]})
        assert big.status_code == 413 and "big.txt" in big.json()["message"] and "MiB" in big.json()["message"]
        huge = client.post("/desk/api/upload", content=b"{" + b" " * 200_000 + b"}",
                           headers={**HEADERS, "Content-Type": "application/json"})
        assert huge.status_code == 413 and "limit" in huge.json()["message"]  # refused before the body was read
        assert post({"files": [{"name": f"{i}.txt", "data": b64(b"x")} for i in range(3)]}).status_code == 413
        assert post({"text": "长" * 51}).status_code == 413
        kind = post({"files": [{"name": "notes.xlsx", "data": b64(b"x")}]})
        assert kind.status_code == 400 and "unsupported file type .xlsx" in kind.json()["message"]
        assert "not valid base64" in post({"files": [{"name": "a.txt", "data": "%%%"}]}).json()["message"]
        assert post({"files": []}).status_code == 400
        # a file that reads as no text: the job fails and says why
        response = post({"files": [{"name": "blank.txt", "data": b64("\u200b \n".encode())}]})
        job = wait(client, response.json()["id"])
        assert job["state"] == "failed" and "blank.txt" in job["error"]


def test_document_text_is_escaped_everywhere(client):
    evil = '<script>alert("x")</script>\n推进5G网络建设<img src=x onerror=alert(1)>，支持中小企业发展。'
    job = upload(client, text=evil, title='<b onmouseover="alert(2)">标题</b>')
    [key] = job["result"]
    for url in ("/", f"/doc/{key}", "/review"):
        html = client.get(url).text
        assert "<script>alert" not in html and "<img src=x" not in html and '<b onmouseover' not in html, url
    page = client.get(f"/doc/{key}").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page or "&lt;script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_export_uses_the_current_labels_of_the_view(client, doc):
    key = doc["key"]
    index = body_index(doc, 4)
    client.post("/desk/api/correct", json={"doc": key, "index": index, "labels": ["carbon"]}, headers=HEADERS)
    jsonl = client.get(f"/desk/export?doc={key}&format=jsonl")
    assert jsonl.status_code == 200 and "attachment" in jsonl.headers["content-disposition"]
    [record] = [json.loads(line) for line in jsonl.text.splitlines()]
    exported = {p["index"]: p for p in record["paragraphs"]}
    assert exported[index]["labels"] == ["carbon"] and exported[index]["label_source"] == "review"
    assert record["domains"]["carbon"]["paragraphs"] == sum("carbon" in p["labels"] for p in record["paragraphs"] if p["kind"] == "body")
    only = client.get(f"/desk/export?doc={key}&format=jsonl&domain=carbon").json()
    assert only["paragraphs"] and all("carbon" in p["labels"] for p in only["paragraphs"])
    csv_text = client.get(f"/desk/export?doc={key}&format=csv").text
    assert csv_text.startswith("doc_id,title,paragraph_id") and f"{record['id']}#{index}" in csv_text
    md = client.get(f"/desk/export?doc={key}&format=md").text
    assert md.startswith("# policylens report") and f"`#{index}` [carbon" in md
    assert client.get(f"/desk/export?doc={key}&format=xml").status_code == 400
    inbox = client.get("/desk/export?format=csv&domain=carbon").text
    assert record["id"] in inbox


def test_the_review_queue_holds_unlabelled_paragraphs_only(client, doc):
    queue = client.get("/desk/api/review?n=50").json()
    reviewed = {p["id"] for p in client.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"] if p["reviewed"]}
    ids = [item["paragraph"]["id"] for item in queue]
    assert ids and not set(ids) & reviewed and len(ids) == len(set(ids))
    assert all(item["paragraph"]["kind"] == "body" and 0 <= item["uncertainty"] <= 1 for item in queue)
    assert queue[0]["uncertainty"] == max(i["uncertainty"] for i in queue)  # the most uncertain first
    page = client.get("/review").text
    assert f'id="p-{queue[0]["paragraph"]["index"]}"' in page


def test_retrain_reports_the_gate_then_promote_hot_swaps_and_rollback_returns(client, world):
    response = client.post("/desk/api/retrain", headers=HEADERS)
    assert response.status_code == 202, response.text
    busy = client.post("/desk/api/retrain", headers=HEADERS)
    assert busy.status_code == 409 and "already running" in busy.json()["message"]
    job = wait(client, response.json()["id"], timeout=300)
    assert job["state"] == "done", job
    version = job["result"]["version"]
    assert version == "v0002"
    report = client.get(f"/desk/api/models/{version}/report").json()
    assert set(report["metrics"]) >= {"old", "new", "change_interval_90"} and "checks" in report["gate"]
    assert report["new_rows"] >= 1  # the corrections made above
    # every new row is in exactly one split, and the page says which rows teach the model
    assert report["new_train_rows"] + report["new_dev_rows"] + report["new_test_rows"] == report["new_rows"]
    page = client.get(f"/models?version={version}").text
    assert f'{report["new_train_rows"]} in train (they teach the model)' in page
    assert f"Gate report of {version}" in page and "90% interval" in page and "old F1" in page
    assert "warnings" in report["gate"]
    # what the page shows of a warning and of a split move (written into this report, as retrain would)
    report_file = world[1].registry.path(version) / "report.json"
    original = report_file.read_bytes()
    report_file.write_text(json.dumps({
        **report, "gate": {**report["gate"], "warnings": ["domain '5g' F1 passed, but its interval reaches -0.072"]},
        "split_moves": [{"doc_id": "notice-9", "from": "test", "to": "train", "note": "its fixes should train"}]}))
    page = html.unescape(client.get(f"/models?version={version}").text)
    report_file.write_bytes(original)
    assert "domain '5g' F1 passed, but its interval reaches -0.072" in page and 'id="gate-warnings"' in page
    assert 'id="split-moves"' in page and "notice-9: test → train (its fixes should train)" in page
    models = client.get("/desk/api/models").json()
    assert models["current"] == "v0001"  # the desk never promotes by itself
    before = client.get("/healthz").json()["model_version"]
    promoted = client.post("/desk/api/models/promote", json={"version": version}, headers=HEADERS).json()
    assert promoted["current"] == version and promoted["reload"]["status"] == "reloaded" and promoted["warning"] is None
    after = client.get("/healthz").json()["model_version"]
    assert after == promoted["model_version"] and promoted["reload"]["previous_version"] == before
    back = client.post("/desk/api/models/rollback", headers=HEADERS).json()
    assert back["current"] == "v0001" and client.get("/desk/api/models").json()["current"] == "v0001"


def test_the_inbox_survives_a_restart(world, client, doc):
    root, backend, pointer = world
    app = desk_app(pointer, backend, write_token=TOKEN, data_dir=root / "desk")
    with TestClient(app) as again:
        rows = again.get("/desk/api/docs").json()
        assert doc["key"] in {r["key"] for r in rows}
        assert again.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"] == \
            client.get(f"/desk/api/docs/{doc['key']}").json()["paragraphs"]


def test_serve_sets_up_the_desk_token_and_read_only_mode(monkeypatch, tiny_tagger_dir, tmp_path):
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from policylens.cli.serve import register

    calls: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(app))
    monkeypatch.delenv("POLICYLENS_WRITE_TOKEN", raising=False)
    cli = typer.Typer()
    register(cli)
    cli.command()(lambda: None)  # a second command keeps `serve` a sub-command
    common = ["serve", "--model", str(tiny_tagger_dir), "--store", str(tmp_path / "store"), "--desk-dir", str(tmp_path / "desk")]
    runner = CliRunner()

    def desk(*args: str, env: dict | None = None):
        result = runner.invoke(cli, [*common, *args], env=env)
        assert result.exit_code == 0, result.output
        return calls[-1].state.desk, result.output

    local, said = desk()
    assert local.read_only is None and local.config.write_token is None and local.backend is not None
    assert "review desk: http://127.0.0.1:8000/ (writes on (local only))" in said
    public, said = desk("--host", "0.0.0.0", "--port", "8124")
    assert "0.0.0.0" in public.read_only and "--write-token" in public.read_only
    assert "review desk: http://127.0.0.1:8124/ (read-only" in said
    guarded, said = desk("--host", "0.0.0.0", "--write-token", "s3cret-token")
    assert guarded.read_only is None and guarded.config.write_token == "s3cret-token" and "writes need the token" in said
    from_env, _ = desk("--host", "0.0.0.0", env={"POLICYLENS_WRITE_TOKEN": "from-the-env-1"})
    assert from_env.read_only is None and from_env.config.write_token == "from-the-env-1"
    assert "--read-only" in desk("--read-only")[0].read_only
    assert "retrain" in local.backend.status()["retrain"]  # no --registry: retraining is off, and says how to turn it on
    short = runner.invoke(cli, [*common, "--write-token", "short"])
    assert short.exit_code == 2 and "at least 8 characters" in short.output


def test_the_served_model_can_become_the_first_version_only_with_a_known_split(tiny_tagger_dir, tiny_backbone_dir, tmp_path):
    from policylens.dataset import SplitConfig, split_by_document
    from policylens.tagger.model_dir import TaggerMeta
    from training.tagger import data_fingerprint

    backend, _ = make_world(tmp_path / "w", tiny_tagger_dir, tiny_backbone_dir)
    registry = Registry(tmp_path / "empty-registry")
    backend.registry = registry
    trained = tmp_path / "trained"
    shutil.copytree(tiny_tagger_dir, trained)
    app = create_app(trained, registry_pointer=registry.root / "CURRENT", poll_seconds=0, predictor_factory=light_predictor,
                     desk_backend=backend, desk_config=DeskConfig())
    with TestClient(app) as client:
        assert "Register the served model as v0001" in client.get("/models").text
        unknown = client.post("/desk/api/models/adopt")
        assert unknown.status_code == 409 and "data fingerprint differs" in unknown.json()["message"]
        assert registry.versions() == []
        # what `policylens train` records: the fingerprint of the split of exactly this base data
        splits = split_by_document(backend.store.rows("empty"), SplitConfig())
        meta = TaggerMeta.load(trained)
        meta.data = {"fingerprint": data_fingerprint(splits)}
        meta.save(trained)
        adopted = client.post("/desk/api/models/adopt")
        assert adopted.status_code == 200, adopted.text
        assert adopted.json()["current"] == "v0001" and registry.current() == "v0001"
        assert adopted.json()["reload"]["status"] == "reloaded"  # now served from the registry
        assert set(registry.test_doc_ids()) == {row["doc_id"] for row in splits["test"]}
        assert registry.info("v0001")["start"] == "adopted"
        again = client.post("/desk/api/models/adopt")
        assert again.status_code == 409 and "already has versions" in again.json()["message"]


def test_the_retraining_thread_output_becomes_progress_and_other_threads_pass_through():
    import sys
    import threading

    from policylens.cli.desk import _report_output

    seen: list = []
    with _report_output(lambda phase, done, total: seen.append((phase, done, total))):
        print("caching the frozen lowest 8 layers for 120 windows")
        sys.stderr.write("\rtrain:  25%|##5       | 10/40 [00:01<00:03, 9.1it/s, loss=0.31]")
        sys.stderr.write("\rLoading weights: 100%|##########| 41/41")  # another bar: not the training's
        other = threading.Thread(target=lambda: print("a request's log line"))
        other.start()
        other.join()
    assert seen == [("caching the frozen lowest 8 layers for 120 windows", None, None), ("training", 10, 40)]
    assert not hasattr(sys.stdout, "progress") and not hasattr(sys.stderr, "progress")  # restored


_SERVER = """
import sys
from pathlib import Path

import uvicorn

from inference.predictor import Predictor
from inference.server.app import create_app
from inference.server.desk import DeskConfig
from inference.summarize import Summarizer
from policylens.cli.desk import TrainingBackend
from training.store import LabelStore

model, root, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
backend = TrainingBackend(LabelStore(root / "store", base_sources=[]), None)
app = create_app(model, poll_seconds=0, predictor_factory=lambda d: Predictor(d, summarizer=Summarizer()),
                 desk_backend=backend, desk_config=DeskConfig(data_dir=root / "desk"))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def test_a_correction_survives_the_server_being_killed_right_after_the_click(tiny_tagger_dir, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "server.py"
    script.write_text(_SERVER, encoding="utf-8")
    server = subprocess.Popen([sys.executable, str(script), str(tiny_tagger_dir), str(tmp_path), str(port)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.2)
        job = httpx.post(base + "/desk/api/upload", json={"text": DOC, "title": "kill"}, timeout=30).json()
        while job["state"] not in ("done", "failed"):
            time.sleep(0.1)
            job = httpx.get(f"{base}/desk/api/jobs/{job['id']}").json()
        [key] = job["result"]
        index = next(p["index"] for p in httpx.get(f"{base}/desk/api/docs/{key}").json()["paragraphs"] if p["kind"] == "body")
        answer = httpx.post(base + "/desk/api/correct", json={"doc": key, "index": index, "labels": ["sme"]}, timeout=30)
        server.send_signal(signal.SIGKILL)  # the moment the click's answer is back
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert answer.status_code == 200
    store = LabelStore(tmp_path / "store", base_sources=[])
    [event] = store.events()
    assert event["version"] == answer.json()["event"]["version"] and event["rows"][0]["labels"] == ["sme"]
    assert store.verify() == [] and json.loads(store.manifest_path.read_text(encoding="utf-8"))["version"] == event["version"]
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.endswith(".tmp")]  # no half-written file left
