"""Fault injection, inputs: bad files and bad fields must cost one error record each, never the run.

Issue 14, work item 3: symlink loops, FIFOs and other non-regular files, documents with no
text after normalisation, `add` on a folder / non-UTF-8 file / wrongly typed fields, decode
errors that name the file, and an unknown --domain. Each case asserts the clear error (or the
correct result) that today's behaviour lacks: a traceback, a hang, a misleading message, rc 0.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policylens.cli import app
from policylens.document import Document
from policylens.ingest import IngestError, iter_file, iter_inputs
from policylens.io import InputError
from policylens.paths import DATA_DIR
from policylens.segment import segment
from policylens.taxonomy import Taxonomy
from training.store import LabelStore

runner = CliRunner()
GOOD = "工业和信息化部要加快推进制造业数字化转型。\n国务院要培育一批专精特新中小企业。\n"
BLANK = "\u3000\u3000 \u200b\n\u200b\u3000\n \t\u200d\u2060\ufeff\n"  # ideographic spaces, zero-width characters


def flat(result: Any) -> str:
    """CLI output with rich's line wrapping undone (words joined by single spaces)."""
    return " ".join(result.output.split())


def within(seconds: float, fn: Callable[[], Any], unblock: Callable[[], None] | None = None) -> Any:
    """fn() in a thread; a hang (opening a FIFO blocks forever) fails the test instead of stalling the suite."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still running after {seconds} s (blocked on a FIFO?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def release_fifo(path: Path) -> Callable[[], None]:
    """Open the FIFO's writing end and close it: a reader blocked in open() gets EOF and returns."""
    def unblock() -> None:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    return unblock


def errors_and_docs(items: Iterator[Document | IngestError]) -> tuple[dict[str, str], list[Document]]:
    errors: dict[str, str] = {}
    docs: list[Document] = []
    for item in items:
        if isinstance(item, IngestError):
            errors[Path(item.path).name] = item.reason
        else:
            docs.append(item)
    return errors, docs


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "a.txt").write_text(GOOD, encoding="utf-8")
    (folder / "z.txt").write_text(GOOD.replace("国务院", "市人民政府"), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------
# symlink loops
# ---------------------------------------------------------------------------


def test_symlink_loop_in_folder_is_one_error_and_the_rest_is_read(inbox: Path) -> None:
    os.symlink("loop.txt", inbox / "loop.txt")  # points at itself
    os.symlink("ping.md", inbox / "pong.md")
    os.symlink("pong.md", inbox / "ping.md")
    errors, docs = errors_and_docs(iter_inputs([inbox]))
    assert [d.id for d in docs] == ["a", "z"]
    assert set(errors) == {"loop.txt", "ping.md", "pong.md"}
    assert all("symlink loop" in reason for reason in errors.values())
    # given directly, too
    (error,) = list(iter_inputs([inbox / "loop.txt"]))
    assert isinstance(error, IngestError) and "symlink loop" in error.reason


def test_segment_cli_goes_on_past_a_symlink_loop(inbox: Path, tmp_path: Path) -> None:
    os.symlink("loop.txt", inbox / "loop.txt")
    out = tmp_path / "paragraphs.jsonl"
    result = runner.invoke(app, ["segment", str(inbox), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "symlink loop" in flat(result) and "2 documents" in flat(result) and "1 skipped" in flat(result)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {row["doc_id"] for row in rows} == {"a", "z"}


def test_tag_cli_goes_on_past_a_symlink_loop_and_leaves_no_part_file(inbox: Path, tmp_path: Path,
                                                                       tiny_tagger_dir: Path) -> None:
    os.symlink("loop.txt", inbox / "loop.txt")
    out = tmp_path / "tags.jsonl"
    result = runner.invoke(app, ["tag", str(inbox), "--model", str(tiny_tagger_dir), "--out", str(out),
                                 "--no-summary", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r.get("id") for r in records if "error" not in r] == ["a", "z"]
    (error,) = [r for r in records if "error" in r]
    assert "symlink loop" in error["error"] and error["source"].endswith("loop.txt")
    assert "1 errors" in result.output
    assert not list(tmp_path.glob("*.part")), "an empty .part file was left behind"


def test_failed_tag_run_leaves_no_empty_part_file(inbox: Path, tmp_path: Path, tiny_tagger_dir: Path) -> None:
    """A run that dies before its first record (here: the predictor fails to load) leaves no empty .part."""
    from inference.batch import BatchConfig, run_batch

    class Broken:
        segment_config = None

        def analyze(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt  # what Ctrl-C during the first chunk looks like

    out = tmp_path / "tags.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_batch([str(inbox)], BatchConfig(model_dir=tiny_tagger_dir, out=out, summary=False), progress=False,
                  log=lambda _: None, predictor=Broken())
    assert not out.exists() and not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------------------
# FIFOs, devices, sockets: never opened
# ---------------------------------------------------------------------------


def test_fifo_in_folder_is_skipped_without_opening_it(inbox: Path) -> None:
    fifo = inbox / "x.txt"
    os.mkfifo(fifo)
    errors, docs = within(20, lambda: errors_and_docs(iter_inputs([inbox])), release_fifo(fifo))
    assert [d.id for d in docs] == ["a", "z"]
    assert "not a regular file" in errors["x.txt"] and "FIFO" in errors["x.txt"]


def test_fifo_given_directly_is_skipped(tmp_path: Path) -> None:
    fifo = tmp_path / "x.txt"
    os.mkfifo(fifo)
    items = within(20, lambda: list(iter_file(fifo)), release_fifo(fifo))
    assert len(items) == 1 and isinstance(items[0], IngestError) and "not a regular file" in items[0].reason
    jsonl = tmp_path / "corpus.jsonl"  # the JSON Lines reader opens files itself: same check
    os.mkfifo(jsonl)
    (error,) = within(20, lambda: list(iter_inputs([jsonl])), release_fifo(jsonl))
    assert isinstance(error, IngestError) and "not a regular file" in error.reason


def test_segment_cli_does_not_hang_on_a_fifo(inbox: Path, tmp_path: Path) -> None:
    fifo = inbox / "x.txt"
    os.mkfifo(fifo)
    result = within(60, lambda: runner.invoke(app, ["segment", str(inbox), str(fifo)]), release_fifo(fifo))
    assert result.exit_code == 0, result.output
    assert "not a regular file" in flat(result) and "2 documents" in flat(result)


def test_devices_and_sockets_are_not_regular_files(inbox: Path) -> None:
    os.symlink(os.devnull, inbox / "dev.txt")  # a character device behind a .txt name
    short = Path(tempfile.mkdtemp(prefix="pl-", dir="/tmp"))  # AF_UNIX paths must be short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "s.txt"))
        os.symlink(short / "s.txt", inbox / "sock.txt")
        errors, docs = within(20, lambda: errors_and_docs(iter_inputs([inbox])))
    finally:
        sock.close()
        shutil.rmtree(short, ignore_errors=True)
    assert [d.id for d in docs] == ["a", "z"]
    assert "character device" in errors["dev.txt"] and "socket" in errors["sock.txt"]
    assert all("not a regular file" in reason for reason in errors.values())


# ---------------------------------------------------------------------------
# no text after normalisation
# ---------------------------------------------------------------------------


def test_blank_document_is_an_error_record(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text(BLANK, encoding="utf-8")
    (error,) = list(iter_inputs([blank]))
    assert isinstance(error, IngestError) and "no text after normalisation" in error.reason
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"doc_id": "b", "text": BLANK}) + "\n" + json.dumps({"doc_id": "g", "text": GOOD}) + "\n",
                      encoding="utf-8")
    errors, docs = errors_and_docs(iter_inputs([corpus]))
    assert [d.id for d in docs] == ["g"] and "no text after normalisation" in errors["corpus.jsonl"]
    (error,) = list(iter_inputs(["-"], stdin=__import__("io").BytesIO(BLANK.encode("utf-8"))))
    assert isinstance(error, IngestError) and "no text after normalisation" in error.reason


def test_invisible_only_lines_make_no_paragraphs() -> None:
    document = Document(id="d", text="\u200d\u2060\n" + GOOD + "\u200c\n")
    assert [p.text for p in segment(document)] == GOOD.split()


def test_segment_cli_fails_when_no_document_has_text(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text(BLANK, encoding="utf-8")
    result = runner.invoke(app, ["segment", str(blank)])
    assert result.exit_code != 0, result.output
    assert "no text after normalisation" in flat(result) and "0 paragraphs" in flat(result)
    good = tmp_path / "good.txt"
    good.write_text(GOOD, encoding="utf-8")
    result = runner.invoke(app, ["segment", str(blank), str(good)])
    assert result.exit_code == 0 and "1 documents, 2 paragraphs, 1 skipped" in flat(result), result.output


def test_tag_cli_fails_when_no_document_has_text(tmp_path: Path, tiny_tagger_dir: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text(BLANK, encoding="utf-8")
    out = tmp_path / "tags.jsonl"
    result = runner.invoke(app, ["tag", str(blank), "--model", str(tiny_tagger_dir), "--out", str(out),
                                 "--no-summary", "--no-progress"])
    assert result.exit_code == 1, result.output
    (record,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert "no text after normalisation" in record["error"]


# ---------------------------------------------------------------------------
# decode errors name the file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data", "why"), [
    ("a.txt", b"\x00\x01\x02\x03\x91\x92\x00\x00" * 8, "binary"),
    ("b.md", b"\xff\xfe\x00\xd8\x00\xd8", "cannot decode"),  # UTF-16 BOM, then unpaired surrogates
    ("c.html", b"<html><body>\x00\x00\x91\x92</body></html>", "binary"),
    ("d.jsonl", b'{"doc_id": "x", "text": "\x91\x92abc"}\n', "not UTF-8 (byte 0x91 at column 26)"),
])
def test_every_decode_error_names_the_file(tmp_path: Path, name: str, data: bytes, why: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    (error,) = list(iter_inputs([path]))
    assert isinstance(error, IngestError)
    assert str(error).startswith(str(path)) and why in str(error), str(error)


def test_export_names_a_non_utf8_corpus_and_refuses_a_fifo(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"doc_id": "b", "text": "\x91x"}\n')
    result = runner.invoke(app, ["export", str(corpus), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not UTF-8 (byte 0x91)" in flat(result) and "c.jsonl" in flat(result), result.output
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    result = within(20, lambda: runner.invoke(app, ["export", str(fifo), "--out", str(tmp_path / "out")]),
                    release_fifo(fifo))
    assert result.exit_code == 2 and "not a regular file" in flat(result), result.output


# ---------------------------------------------------------------------------
# policylens add: folders, encodings, type errors
# ---------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    taxonomy = tmp_path / "taxonomy.json"
    shutil.copy(DATA_DIR / "taxonomy.json", taxonomy)
    base = write_jsonl(tmp_path / "base.jsonl", [{"id": "b1#0", "text": "加快5G基站建设。", "labels": ["5g"]}])
    return LabelStore(tmp_path / "store", taxonomy_path=taxonomy, base_sources=[base])


def cli_add(store: LabelStore, *args: str) -> Any:
    common = ["--store", str(store.root), "--taxonomy", str(store.taxonomy_path), "--base", str(store.base_sources[0])]
    return runner.invoke(app, ["add", *args, *common])


def test_add_expands_a_folder_to_its_labelled_files(store: LabelStore, tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"id": "a#0", "text": "推动工业节能降碳。", "labels": ["carbon"]}])
    (folder / "b.csv").write_text("id,text,labels\nb#0,培育专精特新中小企业。,sme\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not labelled data", encoding="utf-8")
    write_jsonl(folder / ".hidden.jsonl", [{"id": "h#0", "text": "隐藏。", "labels": []}])
    write_jsonl(folder / "sub" / "c.jsonl", [{"id": "c#0", "text": "子目录。", "labels": []}])
    result = cli_add(store, str(folder))
    assert result.exit_code == 0, result.output
    assert "2 added" in result.output
    assert [e["source"] for e in store.events()] == [str(folder / "a.jsonl"), str(folder / "b.csv")]
    assert "folder" in runner.invoke(app, ["add", "--help"], env={"COLUMNS": "200"}).output


def test_add_refuses_an_empty_folder_and_the_store_itself(store: LabelStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli_add(store, str(empty))
    assert result.exit_code == 2 and "no .jsonl, .ndjson, .csv files" in result.output, result.output
    store.root.mkdir(parents=True, exist_ok=True)
    with pytest.raises(InputError, match="label store's own folder"):
        store.add([store.root])


def test_add_non_utf8_file_names_file_and_byte(store: LabelStore, tmp_path: Path) -> None:
    bad = tmp_path / "x.jsonl"
    line1 = json.dumps({"id": "x#0", "text": "推动工业节能降碳。", "labels": ["carbon"]}, ensure_ascii=False).encode() + b"\n"
    bad.write_bytes(line1 + b'{"id": "x#1", "text": "\x91quoted\x92", "labels": []}\n')
    offset = len(line1) + len(b'{"id": "x#1", "text": "')
    with pytest.raises(InputError) as caught:
        store.add([bad])
    assert f"x.jsonl: not UTF-8 (byte 0x91 at offset {offset}, line 2)" in str(caught.value)
    result = cli_add(store, str(bad))
    assert result.exit_code == 2 and f"{bad}: not UTF-8 (byte 0x91" in result.output, result.output
    assert "Traceback" not in result.output and not store.events()
    csv = tmp_path / "y.csv"
    csv.write_bytes("id,text,labels\ny#0,推动".encode("gbk") + b",carbon\n")
    with pytest.raises(InputError, match=r"y\.csv: not UTF-8 \(byte 0x"):
        store.add([csv])


@pytest.mark.parametrize(("row", "message"), [
    ({"id": "t#0", "text": ["推动", "降碳"], "labels": ["carbon"]}, "'text' must be a string, got list"),
    ({"id": 12, "text": "推动工业节能降碳。", "labels": ["carbon"]}, "'id' must be a string, got int 12"),
    ({"id": True, "text": "推动工业节能降碳。", "labels": []}, "'id' must be a string, got bool true"),
    ({"text": "推动工业节能降碳。", "labels": []}, "missing 'id'"),
    ({"id": " ", "text": "推动工业节能降碳。", "labels": []}, "empty 'id'"),
    ({"id": "t#0", "text": "\u3000\u200b", "labels": []}, "empty 'text' for id 't#0'"),
    ({"id": "t#0", "text": "推动。", "labels": 3}, "'labels' must be a list of label ids (may be empty), got int 3"),
    ({"id": "t#0", "text": "推动。", "labels": ["sme", 5]}, "got a list holding int 5"),
    ({"doc_id": 7, "paragraphs": []}, "'doc_id' must be a string, got int 7"),
    ({"doc_id": "d", "paragraphs": "一段"}, "'paragraphs' must be a list, got str '一段'"),
    ({"doc_id": "d", "paragraphs": [{"text": {"zh": "推动"}, "labels": []}]}, "'text' must be a string, got dict"),
    (["not", "an", "object"], "expected a JSON object, got list"),
])
def test_add_type_errors_say_what_the_value_was(store: LabelStore, tmp_path: Path, row: Any, message: str) -> None:
    bad = write_jsonl(tmp_path / "t.jsonl", [row])
    with pytest.raises(InputError) as caught:
        store.add([bad])
    assert str(caught.value).startswith(f"{bad}:1") and message in str(caught.value), str(caught.value)
    assert not store.events()


def test_add_fifo_is_refused_without_opening_it(store: LabelStore, tmp_path: Path) -> None:
    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"x\.jsonl: not a regular file"):
        within(20, lambda: store.add([fifo]), release_fifo(fifo))


# ---------------------------------------------------------------------------
# unknown --domain
# ---------------------------------------------------------------------------


def test_summarize_unknown_domain_lists_the_known_ones(tmp_path: Path, tiny_tagger_dir: Path) -> None:
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD, encoding="utf-8")
    known = ", ".join(Taxonomy.load().ids)  # from the taxonomy, whatever it holds
    expected = f"unknown domain 'nosuch'; known: {known}"
    for extra in (["--model", str(tiny_tagger_dir)], []):
        result = runner.invoke(app, ["summarize", str(doc), "--domain", "nosuch", *extra], env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert expected in result.output, result.output


def test_summarizer_refuses_an_unknown_domain() -> None:
    from inference.summarize import Summarizer, known_domains

    assert known_domains() == Taxonomy.load().ids
    with pytest.raises(ValueError, match="unknown domain 'nosuch'; known: 5g, sme"):
        Summarizer().summarize(Document(id="d", text=GOOD), method="lead", domain="nosuch")
    summary = Summarizer().summarize(Document(id="d", text=GOOD), method="lead", domain="sme")
    assert summary.domain == "sme"
