"""Ingest: every format and encoding we claim to read, and every way a file can be bad.

All fixtures are written here into tmp_path, with short texts authored for the tests.
"""

from __future__ import annotations

import codecs
import io
import json
import pickle
import random
import sys
from pathlib import Path

import pytest

from policylens.document import Document
from policylens.ingest import IngestError, iter_inputs, read_file
from policylens.ingest.encoding import decode_bytes
from policylens.ingest.reflow import looks_hard_wrapped
from policylens.io import InputError

NOTICE = "关于推动制造业高质量发展的通知\n各有关单位：\n现将2024年有关事项通知如下。\n"


def split(items):
    docs = [item for item in items if isinstance(item, Document)]
    errors = [item for item in items if isinstance(item, IngestError)]
    return docs, errors


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- encodings -------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "encoding"), [
    (NOTICE.encode("utf-8"), "utf-8"),
    (codecs.BOM_UTF8 + NOTICE.replace("\n", "\r\n").encode("utf-8"), "utf-8-sig"),
    (NOTICE.encode("gbk"), "gb18030"),
    (codecs.BOM_UTF16_LE + NOTICE.encode("utf-16-le"), "utf-16-le"),
    (codecs.BOM_UTF16_BE + NOTICE.encode("utf-16-be"), "utf-16-be"),
    (codecs.BOM_UTF32_LE + NOTICE.encode("utf-32-le"), "utf-32-le"),
    (NOTICE.encode("utf-16-le"), "utf-16-le"),  # no BOM: NUL pattern + plausibility
    (NOTICE.replace("\n", "\r\n").encode("utf-16-be"), "utf-16-be"),
])
def test_text_file_encodings_are_detected(tmp_path, data, encoding):
    path = write(tmp_path / "notice.txt", data)
    [doc] = read_file(path)
    assert doc.text == NOTICE
    assert doc.meta["encoding"] == encoding
    assert doc.id == "notice" and doc.source == str(path) and doc.title is None


def test_gb18030_only_characters(tmp_path):
    text = "𠮷野家与㐀字号企业参与供应链试点。\n"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    data = text.encode("gb18030")
    [doc] = read_file(write(tmp_path / "rare.txt", data))
    assert doc.text == text and doc.meta["encoding"] == "gb18030"


def test_big5_is_not_read_as_gb18030_nonsense():
    text = "工業和信息化部關於推動製造業高質量發展的通知。"
    assert decode_bytes(text.encode("big5"), "x.txt") == (text, "big5hkscs")


def test_traditional_characters_are_kept(tmp_path):
    [doc] = read_file(write(tmp_path / "t.txt", "國務院新聞辦舉行發布會\n".encode("utf-8")))
    assert doc.text == "國務院新聞辦舉行發布會\n"  # conversion is policylens.chinese's job


@pytest.mark.parametrize("data", [b"", b"  \r\n\t\n", "\u3000\n".encode("utf-8"), codecs.BOM_UTF8])
def test_empty_file(tmp_path, data):
    path = write(tmp_path / "empty.txt", data)
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value) == f"{path}: empty file"
    assert info.value.path == str(path) and info.value.reason == "empty file"


def test_binary_file_with_nul_bytes(tmp_path):
    data = random.Random(7).randbytes(4096) + b"\x00\x00"
    path = write(tmp_path / "blob.txt", data)
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value) == f"{path}: binary file (contains NUL bytes)"


def test_undecodable_file(tmp_path):
    path = write(tmp_path / "mojibake.txt", bytes(range(0x80, 0x100)) * 8)
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value) == f"{path}: cannot decode: not UTF-8, GB18030 or UTF-16"


def test_control_characters_mean_binary(tmp_path):
    path = write(tmp_path / "ctl.txt", b"\x01\x02\x03\x04abc\x05\x06\x07\x08" * 20)
    with pytest.raises(IngestError, match="binary file"):
        read_file(path)


def test_ingest_error_is_an_input_error_and_pickles():
    err = IngestError("a/b.jsonl", "'text' is empty", 7)
    assert isinstance(err, InputError)
    assert str(err) == "a/b.jsonl:7: 'text' is empty"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, again.line, str(again)) == (err.path, err.reason, 7, str(err))


# --- HTML ------------------------------------------------------------------------------------

GOV_PAGE = """<!DOCTYPE html>
<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312">
<title>关于加快工业互联网发展的通知_政策_示例政府网</title>
<meta name="ArticleTitle" content="关于加快工业互联网发展的通知">
<meta name="PubDate" content="2024-03-05 10:00">
<script>var msg = "脚本文字";</script><style>.x {color: red}</style></head>
<body>
<div class="header"><div id="nav"><ul><li><a>首页</a></li><li><a>政策文件</a></li></ul></div></div>
<div class="breadcrumb">当前位置：首页 &gt; 政策文件</div>
<div class="main">
  <h1>关于加快工业互联网发展的通知</h1>
  <div class="pages-date">2024-03-05 来源：示例部
    <span class="font-size">【字体：<a>大</a> <a>中</a> <a>小</a>】</span><a class="printBtn">打印</a></div>
  <div class="bdsharebuttonbox">分享到：<a>微信</a><a>微博</a></div>
  <div id="UCAP-CONTENT">
    <p>各省、自治区、直辖市工业和信息化主管部门：</p>
    <p>&#12288;&#12288;为加快工业互联网创新发展，
       现将有关事项通知如下。</p>
    <p>分享到：</p>
    <p>一、总体要求</p>
    <p>到2025年，<strong>工业互联网</strong>平台普及率显著提升。<br>重点行业实现全覆盖。</p>
    <table><tr><td>序号</td><td>任务</td></tr><tr><td>1</td><td>建设标识 解析节点</td></tr></table>
    <div style="display:none">隐藏的文字</div>
    <p>【字体：大 中 小】 打印 关闭窗口</p>
  </div>
</div>
<div class="footer">版权所有：示例部</div>
</body></html>
"""
GOV_TEXT = "\n".join([
    "关于加快工业互联网发展的通知",
    "各省、自治区、直辖市工业和信息化主管部门：",
    "为加快工业互联网创新发展，现将有关事项通知如下。",
    "一、总体要求",
    "到2025年，工业互联网平台普及率显著提升。",
    "重点行业实现全覆盖。",
    "序号\t任务",
    "1\t建设标识 解析节点",
])


def test_html_gov_page(tmp_path):
    path = write(tmp_path / "notice.shtml", GOV_PAGE.encode("gbk"))  # declared gb2312, GBK bytes
    [doc] = read_file(path)
    assert doc.text == GOV_TEXT
    assert doc.title == "关于加快工业互联网发展的通知"
    assert doc.meta["date"] == "2024-03-05 10:00"
    assert doc.meta["format"] == "html" and doc.meta["encoding"] == "gb18030"
    for chrome in ("首页", "分享", "字体", "打印", "版权", "脚本", "隐藏", "微信"):
        assert chrome not in doc.text


def test_html_without_known_container_uses_densest_block(tmp_path):
    paragraphs = ["第一条　为规范数据安全管理，制定本办法。" * 3, "第二条　本办法适用于境内的数据处理活动。" * 3]
    page = (
        "<html><head><title>数据安全管理办法 - 示例网</title></head><body>"
        "<div class='menu'><a>首页</a><a>机构</a><a>新闻</a></div>"
        "<div class='wrap'><div class='left'>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div>"
        "<div class='right'><a>相关链接</a></div></div></body></html>"
    )
    [doc] = read_file(write(tmp_path / "rules.htm", page.encode("utf-8")))
    assert doc.title == "数据安全管理办法"
    assert doc.text == "\n".join(["数据安全管理办法", *paragraphs])


def test_html_layout_table_keeps_paragraphs_apart(tmp_path):
    page = ("<html><body><table><tr><td class='left'><a>导航</a></td><td>"
            "<p>第一段文字，说明背景情况。</p><p>第二段文字，提出工作要求。</p>"
            "<table><tr><td><p>地区</p></td><td><p>目标</p></td></tr></table>"
            "</td></tr></table></body></html>")
    [doc] = read_file(write(tmp_path / "layout.html", page.encode("utf-8")))
    assert doc.text == "导航\n第一段文字，说明背景情况。\n第二段文字，提出工作要求。\n地区\t目标"


def test_html_with_no_text(tmp_path):
    path = write(tmp_path / "blank.html", b"<html><head><script>x=1</script></head><body> </body></html>")
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value) == f"{path}: no text found in HTML page"


# --- DOCX ------------------------------------------------------------------------------------

def test_docx_paragraphs_and_table(tmp_path):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("关于促进中小企业发展的若干措施", level=1)
    document.add_paragraph("一、加大财税支持。")
    document.add_paragraph("")
    table = document.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("项目", "金额", "期限"), ("贷款贴息", "100万元", "")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_paragraph("二、优化融资环境。")
    path = tmp_path / "measures.docx"
    document.save(path)

    [doc] = read_file(path)
    assert doc.text == "关于促进中小企业发展的若干措施\n一、加大财税支持。\n项目\t金额\t期限\n贷款贴息\t100万元\n二、优化融资环境。"
    assert doc.title == "关于促进中小企业发展的若干措施"
    assert doc.meta["format"] == "docx"


def test_corrupt_docx(tmp_path):
    path = write(tmp_path / "broken.docx", b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value).startswith(f"{path}: not a valid DOCX file")


# --- PDF -------------------------------------------------------------------------------------

def _chinese_pdf(path: Path, pages: list[list[str]], header: str | None = None) -> None:
    """reportlab's built-in CID font STSong-Light needs no font file and pypdf extracts it."""
    pytest.importorskip("reportlab")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    pdf = canvas.Canvas(str(path))
    pdf.setTitle("Microsoft Word - 数字化转型实施意见.docx")
    for number, lines in enumerate(pages, 1):
        pdf.setFont("STSong-Light", 12)
        if header:
            pdf.drawString(72, 800, header)
        for row, line in enumerate(lines):
            pdf.drawString(72, 760 - 18 * row, line)
        pdf.drawString(290, 40, f"- {number} -")
        pdf.showPage()
    pdf.save()


def _wrap(text: str, width: int = 20) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)]


def test_pdf_text_layer_is_reflowed(tmp_path):
    intro = "推动新一代信息技术与制造业深度融合，加快数字化转型，提升产业链供应链韧性和安全水平。"
    task = "（一）实施智能制造工程。培育一批智能工厂和数字化车间，推广先进适用的系统解决方案，带动中小企业上云用数赋智，加快建设体系"
    assert len(task) % 20 == 0  # the paragraph fills its last line on page 1 and goes on over the page
    task_end = "，形成可复制的经验"
    lines = ["关于推动制造业数字化转型的实施意见", "一、总体要求", *_wrap(intro), "二、重点任务", *_wrap(task)]
    path = tmp_path / "plan.pdf"
    _chinese_pdf(path, [lines, [task_end, "1.加强组织领导。各地要建立工作机制。"]], header="工业和信息化部文件")

    [doc] = read_file(path)
    assert doc.text == "\n".join([
        "关于推动制造业数字化转型的实施意见",
        "一、总体要求",
        intro,
        "二、重点任务",
        task + task_end,  # joined across the page break; header and "- 1 -" dropped
        "1.加强组织领导。各地要建立工作机制。",
    ])
    assert doc.title == "数字化转型实施意见"
    assert doc.meta["pages"] == 2


def test_pdf_without_text_layer(tmp_path):
    pytest.importorskip("reportlab")
    from reportlab.pdfgen import canvas

    path = tmp_path / "scan.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.rect(100, 100, 200, 300, fill=1)
    pdf.showPage()
    pdf.save()
    with pytest.raises(IngestError) as info:
        read_file(path)
    assert str(info.value) == f"{path}: PDF has no text layer (scanned?); OCR it first"


def test_encrypted_and_corrupt_pdf(tmp_path):
    pytest.importorskip("reportlab")
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfgen import canvas

    locked = tmp_path / "locked.pdf"
    pdf = canvas.Canvas(str(locked), encrypt=StandardEncryption("secret", canPrint=0))
    pdf.drawString(72, 700, "secret text")
    pdf.save()
    broken = write(tmp_path / "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    owner_only = tmp_path / "owner_only.pdf"  # restrictions but no user password: readable
    pdf = canvas.Canvas(str(owner_only), encrypt=StandardEncryption("", ownerPassword="boss", canCopy=0))
    pdf.drawString(72, 700, "Printable notice.")
    pdf.save()

    docs, errors = split(list(iter_inputs([locked, broken, owner_only])))
    assert [(d.id, d.text, d.title) for d in docs] == [("owner_only", "Printable notice.", None)]
    assert [e.path for e in errors] == [str(locked), str(broken)]
    assert "encrypted" in errors[0].reason
    assert errors[1].reason.startswith("not a valid PDF file")


def test_hard_wrap_detection_leaves_normal_text_alone():
    normal = "\n".join(["一、总体要求", "推动新一代信息技术与制造业深度融合，加快数字化转型。"] * 15)
    wrapped = "\n".join(_wrap("推动新一代信息技术与制造业深度融合，加快数字化转型，提升韧性和安全水平" * 12))
    assert not looks_hard_wrapped(normal)
    assert looks_hard_wrapped(wrapped)


# --- JSON Lines ------------------------------------------------------------------------------

def test_jsonl_bad_rows_do_not_stop_good_rows(tmp_path):
    rows = [
        json.dumps({"doc_id": "p-1", "source": "policy", "title": "关于甲的通知", "date": "2024-01-02",
                    "text": "第一段。\r\n第二段。"}, ensure_ascii=False),
        json.dumps({"doc_id": "p-2", "source": "news", "title": "乙", "date": "2024-02-03", "text": "  "},
                   ensure_ascii=False),
        "",
        '{"doc_id": "p-4", "text": ',
        json.dumps({"source": "news", "text": "没有编号的新闻。"}, ensure_ascii=False),
    ]
    path = write(tmp_path / "corpus.jsonl", ("\n".join(rows) + "\n").encode("utf-8"))

    docs, errors = split(list(iter_inputs([path])))
    assert [d.id for d in docs] == ["p-1", "corpus:5"]
    first = docs[0]
    assert first.text == "第一段。\n第二段。" and first.title == "关于甲的通知"
    assert first.source == f"{path}:1"
    assert (first.meta["source"], first.meta["date"], first.meta["line"]) == ("policy", "2024-01-02", 1)
    assert [str(e) for e in errors] == [f"{path}:2: 'text' is empty",
                                        f"{path}:4: not valid JSON (Expecting value at column 26)"]

    collected: list[IngestError] = []
    assert [d.id for d in read_file(path, errors=collected)] == ["p-1", "corpus:5"]
    assert [e.line for e in collected] == [2, 4]
    with pytest.raises(IngestError, match=r"corpus.jsonl:2: 'text' is empty"):
        read_file(path)


def test_jsonl_custom_fields_and_missing_text(tmp_path):
    rows = [{"id": 7, "body": "内容。", "headline": "标题"}, {"id": 8, "text": "字段名不对。"}]
    path = write(tmp_path / "alt.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())
    errors: list[IngestError] = []
    docs = read_file(path, text_field="body", id_field="id", title_field="headline", errors=errors)
    assert [(d.id, d.text, d.title) for d in docs] == [("7", "内容。", "标题")]
    assert [str(e) for e in errors] == [f"{path}:2: row has no 'body' field"]


def test_json_array_file(tmp_path):
    path = write(tmp_path / "pair.json", json.dumps(
        [{"doc_id": "a", "text": "甲。"}, {"doc_id": "b", "text": "乙。"}], ensure_ascii=False, indent=2).encode())
    assert [(d.id, d.text) for d in read_file(path)] == [("a", "甲。"), ("b", "乙。")]


# --- inputs: folders, globs, stdin, ids ------------------------------------------------------

def test_missing_path_yields_error():
    items = list(iter_inputs(["/nonexistent/policy.txt"]))
    assert len(items) == 1 and isinstance(items[0], IngestError)
    assert str(items[0]) == "/nonexistent/policy.txt: no such file or directory"


def test_folder_with_good_and_bad_files(tmp_path):
    root = tmp_path / "inbox"
    write(root / "a_notice.txt", NOTICE.encode("gbk"))
    write(root / "b_empty.txt", b"")
    write(root / "c_page.html", GOV_PAGE.encode("gbk"))
    write(root / "d_blob.txt", b"\x00\x01\x02\xff" * 64)
    write(root / "sub" / "e_more.md", "二、重点任务\n".encode("utf-16"))
    write(root / "sub" / "f_rows.jsonl", b'{"doc_id": "row-1", "text": "\xe7\x94\xb2"}\n{"doc_id": "row-2"}\n')
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")  # unsupported suffix: skipped
    write(root / ".hidden.txt", NOTICE.encode())  # hidden: skipped
    write(root / ".git" / "x.txt", NOTICE.encode())  # hidden folder: skipped
    write(root / "~$lock.docx", b"\x00lock")  # Word lock file: skipped

    docs, errors = split(list(iter_inputs([root])))
    assert [d.id for d in docs] == ["a_notice", "c_page", "e_more", "row-1"]
    assert docs[0].text == NOTICE and docs[2].text == "二、重点任务\n"
    assert [str(e) for e in errors] == [
        f"{root / 'b_empty.txt'}: empty file",
        f"{root / 'd_blob.txt'}: binary file (contains NUL bytes)",
        f"{root / 'sub' / 'f_rows.jsonl'}:2: row has no 'text' field",
    ]
    flat, _ = split(list(iter_inputs([root], recursive=False)))
    assert [d.id for d in flat] == ["a_notice", "c_page"]


def test_glob_and_duplicate_stems(tmp_path):
    write(tmp_path / "a" / "notice.txt", "甲地通知。\n".encode())
    write(tmp_path / "b" / "notice.txt", "乙地通知。\n".encode())
    docs, errors = split(list(iter_inputs([str(tmp_path / "*" / "*.txt"), tmp_path / "a" / "notice.txt"])))
    assert errors == []
    assert [d.text for d in docs] == ["甲地通知。\n", "乙地通知。\n"]  # the repeated file is read once
    assert docs[0].id == "notice"
    assert docs[1].id.startswith("notice-") and len(docs[1].id) == len("notice-") + 8
    assert docs[1].meta["original_id"] == "notice"
    [nothing] = list(iter_inputs([str(tmp_path / "*.pdf")]))
    assert isinstance(nothing, IngestError) and "no supported files match" in nothing.reason


def test_unknown_suffix_is_sniffed(tmp_path):
    text_file = write(tmp_path / "README", "说明文件。\n".encode("gbk"))
    blob = write(tmp_path / "data.bin", bytes(range(256)) * 4)
    [doc] = read_file(text_file)
    assert doc.text == "说明文件。\n" and doc.id == "README"
    with pytest.raises(IngestError) as info:
        read_file(blob)
    assert str(info.value) == f"{blob}: unsupported or binary file"
    with pytest.raises(IngestError, match=r"old.doc: unsupported format .doc \(old Word format; save it as .docx\)"):
        read_file(write(tmp_path / "old.doc", b"\xd0\xcf\x11\xe0 OLE"))


def test_stdin_plain_text(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(NOTICE.encode("gbk"))))
    [doc] = list(iter_inputs(["-"]))
    assert (doc.id, doc.text, doc.source) == ("stdin", NOTICE, "<stdin>")


def test_stdin_jsonl():
    data = '\n  {"doc_id": "s1", "text": "第一篇。"}\n{"doc_id": "s2", "text": ""}\n'.encode()
    docs, errors = split(list(iter_inputs("-", stdin=io.BytesIO(data))))
    assert [(d.id, d.text) for d in docs] == [("s1", "第一篇。")]
    assert [str(e) for e in errors] == ["<stdin>:3: 'text' is empty"]
