"""Segmentation on the real seeds and on small documents written for each rule."""

from pathlib import Path

import pytest

from policylens.document import Document
from policylens.segment import (
    SegmentConfig,
    heading_level,
    is_boilerplate,
    segment,
    speaker_of,
    split_sentences,
)

SEEDS = Path(__file__).resolve().parents[2] / "seeds"


def _doc(text: str, doc_id: str = "t") -> Document:
    return Document(id=doc_id, text=text)


def seed(prefix: str) -> Document:
    path = next(SEEDS.glob(f"{prefix}_*.txt"))
    return Document(id=path.stem, text=path.read_text(encoding="utf-8"))


def test_offsets_point_back_to_the_original_text_for_every_seed():
    for path in sorted(SEEDS.glob("*.txt")):
        doc = Document(id=path.stem, text=path.read_text(encoding="utf-8"))
        paragraphs = segment(doc)
        assert paragraphs, path
        for i, p in enumerate(paragraphs):
            assert p.id == f"{path.stem}#{i}" and p.index == i
            assert doc.text[p.start : p.end] == p.original
            assert p.text and p.text == p.text.strip()
            assert len(p.original) <= 400 or p.kind != "body"


def test_seed_003_without_line_breaks_is_chunked_at_sentence_ends():
    doc = seed("003")
    body = [p for p in segment(doc) if p.kind == "body"]
    assert len(body) >= 5
    for p in body[:-1]:
        assert p.original[-1] in "。！？；”", p.original[-10:]
        assert 150 <= len(p.original) <= 400


def test_traditional_seed_is_normalised_but_original_kept():
    doc = seed("001")
    paragraphs = segment(doc)
    title = paragraphs[0]
    assert title.kind == "title"
    assert title.original == "國務院新聞辦就工業和信息化發展情況舉行發布會"
    assert title.text == "国务院新闻办就工业和信息化发展情况举行发布会"
    assert doc.title == title.text


def test_boilerplate_lines_are_dropped():
    doc = seed("001")
    texts = [p.text for p in segment(doc)]
    assert not any("分享到" in t or "字体" in t or "打印" == t for t in texts)
    assert not any(t.startswith("2021-03-03") for t in texts)
    assert is_boilerplate("【字体：大 中 小】 打印") and is_boilerplate("时间:2022-11-30 | 来源:工业和信息化部")
    assert not is_boilerplate("推动中小企业数字化转型。")


def test_speaker_lines_set_the_speaker_of_following_paragraphs():
    doc = seed("001")
    paragraphs = segment(doc)
    speaker_lines = [p for p in paragraphs if p.kind == "speaker"]
    assert any(p.text == "工业和信息化部部长 肖亚庆:" for p in speaker_lines)
    after = paragraphs[paragraphs.index(speaker_lines[1]) + 1]
    assert after.kind == "body" and after.speaker == "工业和信息化部部长 肖亚庆"
    assert speaker_of("中央广播电视总台央视记者:") == "中央广播电视总台央视记者"
    assert speaker_of("以下是回复全文:") is None


def test_a_salutation_to_the_audience_is_not_a_speaker():
    """A work report opens with "各位代表：": 代表 is a role word, but nobody named 各位代表 speaks."""
    text = "政府工作报告\n各位代表：\n现在，我代表国务院，向大会报告政府工作，请予审议。\n过去一年经济保持恢复发展。"
    body = [p for p in segment(Document(id="gwr", text=text)) if p.kind == "body"]
    assert [p.text for p in body][-2:] == ["现在，我代表国务院，向大会报告政府工作，请予审议。", "过去一年经济保持恢复发展。"]
    assert all(p.speaker is None for p in body)
    assert speaker_of("各位代表：") is None and speaker_of("同志们：") is None and speaker_of("女士们、先生们：") is None
    assert speaker_of("人大代表 张三：") == "人大代表 张三"


def test_headings_are_units_and_context_of_the_paragraphs_below():
    text = (
        "关于推动中小企业发展的通知\n"
        "一、总体要求\n"
        "坚持问题导向，聚焦中小企业发展中的突出困难。\n"
        "（一）加强融资支持\n"
        "1. 扩大信贷投放\n"
        "鼓励银行加大对小微企业的信贷投放力度，降低融资成本。\n"
        "二、保障措施\n"
        "各地要加强组织领导。\n"
    )
    paragraphs = segment(_doc(text))
    kinds = [p.kind for p in paragraphs]
    assert kinds == ["title", "heading", "body", "heading", "heading", "body", "heading", "body"]
    assert paragraphs[5].headings == ("一、总体要求", "（一）加强融资支持", "1. 扩大信贷投放")
    assert paragraphs[7].headings == ("二、保障措施",)
    assert heading_level("（二）深挖市场潜能") == 2
    assert heading_level("（二）深挖市场潜能扩大消费需求。进一步扩大汽车消费。") is None


def test_overlong_paragraph_is_cut_at_sentence_ends_with_run_in_title_as_context():
    sentence = "推动工业企业开展节能降碳改造，提高能源利用效率。"
    text = "（四）推进绿色制造。" + sentence * 40
    paragraphs = segment(_doc(text), SegmentConfig(max_chars=200))
    assert len(paragraphs) > 4
    assert all(len(p.original) <= 200 for p in paragraphs)
    assert all(p.original.endswith("。") for p in paragraphs)
    assert paragraphs[1].headings[-1] == "（四）推进绿色制造"
    assert "".join(p.original for p in paragraphs) == text


def test_sentence_split_keeps_closing_quotes():
    text = "他说：“要稳住产业链。”随后离开。"
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["他说：“要稳住产业链。”", "随后离开。"]


def test_empty_document_gives_no_paragraphs():
    assert segment(_doc("\n \n\u3000\n")) == []


def test_lines_of_unusual_spaces_are_skipped():
    text = "关于支持数字经济园区建设的细则\n\u2002\n\u200b\n第一条\u2002 为支持园区发展，制定本细则。\n"
    paragraphs = segment(_doc(text))
    assert [p.kind for p in paragraphs] == ["title", "body"]
    assert all(text[p.start : p.end] == p.original and p.text for p in paragraphs)


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_chars"):
        SegmentConfig(max_chars=5)


# A plan as a PDF conversion gives it: every line broken at ~20 characters, a page number left
# between two halves of a sentence, items and headings at the start of their own lines.
WRAPPED_PLAN = (
    "关于推进制造业数字化转型的实施方案\n"
    "一、总体要求\n"
    "（一）加快推进重点行业数字化改造。支持地方、行业协\n"
    "会、解决方案供应商等开展智能制造能力成熟度评估诊断\n"
    "，推动企业由点及面实施数字化转型，建设一批数字化车\n"
    "12\n"
    "间和智能工厂，带动产业链上下游协同发展。\n"
    "专栏1 重点工程\n"
    "1.家用电器行业：推广个性化定制平台和自动化焊接机器\n"
    "人等解决方案。\n"
    "2.家具行业：推广数字化设计平台和数控焊接设备等解决\n"
    "方案。\n"
    "二、保障措施\n"
    "加强组织领导\n"
    "各地工业和信息化主管部门要加强统筹协调，建立工作机\n"
    "制，及时总结推广典型经验做法，加强宣传引导，营造良好\n"
    "发展氛围。\n"
)


def test_hard_wrapped_lines_are_joined_into_their_paragraph_and_page_numbers_dropped():
    paragraphs = segment(_doc(WRAPPED_PLAN))
    texts = [p.text for p in paragraphs]
    assert "（一）加快推进重点行业数字化改造。支持地方、行业协会、解决方案供应商等开展智能制造能力成熟度评估诊断，" \
           "推动企业由点及面实施数字化转型，建设一批数字化车间和智能工厂，带动产业链上下游协同发展。" in texts
    assert "1.家用电器行业：推广个性化定制平台和自动化焊接机器人等解决方案。" in texts
    assert "2.家具行业：推广数字化设计平台和数控焊接设备等解决方案。" in texts
    assert not any(t == "12" or "12" in t for t in texts)  # the page number is neither a paragraph nor inside one
    by_text = {p.text: p for p in paragraphs}
    assert by_text["加强组织领导"].kind == "heading"  # a short line before a paragraph is still its heading
    body = next(p for p in paragraphs if p.text.startswith("各地"))
    assert body.headings[-1] == "加强组织领导" and body.text.endswith("营造良好发展氛围。")
    for p in paragraphs:  # the original span still covers the wrapped lines, breaks included
        assert WRAPPED_PLAN[p.start : p.end] == p.original


def test_lines_of_whole_paragraphs_are_not_joined():
    text = "加强组织领导\n各地要建立工作机制，及时总结推广典型经验做法\n推动中小企业数字化转型。\n\n强化要素保障\n"
    texts = [p.text for p in segment(_doc(text))]
    assert texts == ["加强组织领导", "各地要建立工作机制，及时总结推广典型经验做法", "推动中小企业数字化转型。", "强化要素保障"]


def test_a_line_broken_by_inline_links_or_an_open_bracket_is_one_paragraph():
    text = ("地级及以上城市细颗粒物（PM\n2.5\n）平均浓度下降9.1%。\n\n"
            "根据《\n中华人民共和国节约能源法\n》，制定本办法。\n")
    assert [p.text for p in segment(_doc(text))] == [
        "地级及以上城市细颗粒物（PM2.5）平均浓度下降9.1%。", "根据《中华人民共和国节约能源法》，制定本办法。"
    ]


def test_the_wikisource_licence_footer_is_not_a_paragraph():
    text = ("各位代表！\n\n我们要推动制造业高质量发展，加快建设现代化产业体系。\n\n\n"
            "本作品是中华人民共和国的\n法律\n、\n法规\n，国家机关的决议。根据《\n中华人民共和国著作权法\n"
            "》第五条第一项，本作品属于\n公有领域\n。\n\nPublic domain\nfalse\n")
    texts = [p.text for p in segment(_doc(text))]
    assert texts[-1] == "我们要推动制造业高质量发展，加快建设现代化产业体系。"
    assert not any("本作品" in t or "Public" in t or t == "false" for t in texts)
