"""What policy documents carry in their structure: targets, task sections, numbered measures, safeguards.

Shared by the scorer's features (training and serving) and the selection prior, so
both read a sentence's role the same way. A 规划/方案/意见 states what it is for
(为……制定本方案), its targets (到2025年……), its main tasks (主要任务/重点任务, each
a numbered measure) and how it will be carried out (保障措施): written summaries of
these documents follow the same order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from policylens.summarizer.units import SentenceUnit

GOAL_SECTION = re.compile(r"总体要求|主要目标|发展目标|工作目标|预期目标|总体目标|目标任务|政策取向|基本原则|总体思路")
TASK_SECTION = re.compile(r"主要任务|重点任务|重点行动|主要措施|重点工作|重点方向|工作任务|重点领域|政策措施|支持措施|主要内容")
SAFEGUARD_SECTION = re.compile(r"保障措施|组织实施|保障机制|组织保障|实施保障|组织领导|工作要求")
TARGET = re.compile(r"到20\d\d年|\d+(?:\.\d+)?\s*[%％]|[万亿]元|左右|以上")
YEAR_TARGET = re.compile(r"(?:到|至|力争|预计)20\d\d年|20\d\d年(?:底|前|末)")
GOAL_SENTENCE = re.compile(r"(?:主要|预期|发展|总体|工作)目标|到20\d\d年")
PURPOSE = re.compile(r"^(?:为(?:了|深入|全面|认真|进一步|加快|贯彻|落实|推动|促进|切实|更好|有效|积极)|旨在)|"
                     r"(?:制定|印发|出台)本(?:方案|意见|计划|规划|办法|通知|指南|措施|细则)|特制定|现提出如下|提出如下")
ORDINAL = re.compile(r"^(?:[一二三四五六七八九十]+是|第[一二三四五六七八九十]+[，,、]|[（(]?[一二三四五六七八九十\d]{1,2}[)）、．.])")
ASKER = re.compile(r"记者|主持人|^问$")
DANGLING = re.compile(r"^(?:但|但是|所以|因此|因而|同时|此外|而且|另外|这些|这|那|他们|他|她|它|其中|对此|为此|当然|其实|总之)")
BOILERPLATE = re.compile(
    r"现(?:将|就).{0,20}(?:通知|意见|如下)|请.{0,12}(?:认真)?(?:贯彻|执行|遵照)|特此(?:通知|公告)|如下[:：]?$|"
    r"女士们|先生们|大家好|谢谢|感谢.{0,8}(?:提问|关心|关注)|欢迎(?:各位|出席|大家)|请.{0,10}(?:回答|介绍|提问)|"
    r"下面.{0,10}(?:请|回答)|"
    r"主持人|记者[:：]|各省、自治区|抄送|印发|联系人|^附件|^[（(]?此件|请予审议|提出意见|我代表|责任编辑|关键词$"
)
_QUESTION_END = ("？", "?")


def in_section(unit: SentenceUnit, pattern: re.Pattern[str]) -> bool:
    return any(pattern.search(h) for h in unit.headings)


def is_question(unit: SentenceUnit) -> bool:
    return unit.text.rstrip("”’」』）)】\"'").endswith(_QUESTION_END)


def structure_prior(unit: SentenceUnit) -> float:
    """Bonus (or malus) from where a sentence sits and what it looks like; 0 for plain prose."""
    bonus = 0.0
    if unit.run_in:
        bonus += 0.3  # "（一）加快推动重大项目建设。": the measure in one line
    elif unit.opens_section:
        bonus += 0.1  # first sentence under a heading
    elif unit.topic:
        bonus += 0.1
    if in_section(unit, GOAL_SECTION) or in_section(unit, TASK_SECTION):
        bonus += 0.1
    targets = len(TARGET.findall(unit.text))
    if GOAL_SENTENCE.search(unit.text) and targets:
        bonus += 0.3  # "今年发展主要预期目标是：国内生产总值增长5%左右；……": what an analyst looks for first
    bonus += min(0.05 * targets, 0.15)
    if BOILERPLATE.search(unit.text):
        bonus -= 0.6
    if is_question(unit):
        bonus -= 1.0  # an analyst wants the answer, not the question: only when nothing else is left
    if unit.speaker and ASKER.search(unit.speaker):
        bonus -= 0.4  # the journalist's or host's words in a press conference
    if len(unit.text) < 12 and not (unit.run_in or unit.topic):
        bonus -= 0.2
    if DANGLING.match(unit.text):
        bonus -= 0.15  # "所以……", "这些……": needs the sentence before it to make sense
    if len(unit.text) > 120:  # a reader skims; a 250-character sentence eats half the budget
        bonus -= min(0.4, 0.1 * (len(unit.text) - 120) / 50 + 0.05)
    return bonus


def is_structured(units: Sequence[SentenceUnit]) -> bool:
    """A document organised like a policy text: several headed sections or numbered measures.
    News items and short posts are plain running prose."""
    sections = {u.section for u in units if u.section}
    numbered = sum(1 for u in units if u.run_in or (u.index_in_paragraph == 0 and ORDINAL.match(u.text)))
    return len(sections) >= 2 or numbered >= 3


POLICY_SOURCES = {"policy", "gov_work_report"}
NEWS_SOURCES = {"news", "news_headlines"}


def genre_of(units: Sequence[SentenceUnit], source: str | None = None) -> float:
    """1.0 for policy texts and work reports, 0.0 for news. The corpus names the genre (`source`
    of corpus_docs.jsonl) when it can; otherwise the structure decides (see is_structured)."""
    if source in POLICY_SOURCES:
        return 1.0
    if source in NEWS_SOURCES:
        return 0.0
    return 1.0 if is_structured(units) else 0.0
