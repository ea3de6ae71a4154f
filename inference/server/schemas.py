"""Request and response models of the HTTP API, with the examples shown in /docs.

Kept apart from the routes so the API's contract reads in one place, and so
clients and tests can build bodies without starting a server.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "text is empty or only whitespace")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]

_EXAMPLE_PARAGRAPHS = [
    "加快5G网络和千兆光网建设，推进5G基站共建共享，拓展工业互联网应用场景。",
    "加大对中小微企业的融资支持，落实减税降费政策，培育一批专精特新企业。",
    "实施工业领域碳达峰行动，推动钢铁、建材等重点行业节能降碳改造。",
]


class TagRequest(BaseModel):
    """Paragraphs to tag; each is scored on its own (long ones are windowed, never truncated)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"paragraphs": _EXAMPLE_PARAGRAPHS}]})

    paragraphs: list[Text] = Field(
        min_length=1,
        description="Paragraph texts (Simplified or Traditional Chinese). At most `max_batch` per request, "
        "each at most `max_chars` characters (see GET /v1/model).",
    )


class ParagraphResult(BaseModel):
    labels: list[str] = Field(description="Labels whose calibrated score reaches the model's threshold; may be empty.")
    scores: dict[str, float] = Field(description="Calibrated probability per label of the taxonomy.")


class TagResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "2024-06-01-e5small",
                    "results": [{"labels": ["5g"], "scores": {"5g": 0.97, "sme": 0.02, "carbon": 0.01, "supply_chain": 0.11}}],
                }
            ]
        }
    )

    model_version: str = Field(description="Version of the model that produced every result of this response.")
    results: list[ParagraphResult] = Field(description="One result per input paragraph, in input order.")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Text = Field(max_length=200, description="Caller's document id; paragraph ids are `{id}#{index}`.")
    text: Text = Field(description="Whole document text; it is segmented into paragraphs server-side.")
    title: str | None = Field(default=None, description="Title; when absent, a title line is detected in the text.")


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "documents": [
                        {
                            "id": "doc-1",
                            "title": "关于推动工业绿色发展的通知",
                            "text": "关于推动工业绿色发展的通知\n一、总体要求\n" + "\n".join(_EXAMPLE_PARAGRAPHS),
                        }
                    ]
                }
            ]
        },
    )

    documents: list[DocumentIn] = Field(
        min_length=1, description="Documents to analyse; ids must be unique within the request."
    )

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[DocumentIn]) -> list[DocumentIn]:
        seen: dict[str, int] = {}
        for index, document in enumerate(documents):
            if document.id in seen:
                raise PydanticCustomError(
                    "duplicate_id",
                    "documents[{index}].id '{id}' repeats documents[{first}].id; ids must be unique",
                    {"index": index, "id": document.id, "first": seen[document.id]},
                )
            seen[document.id] = index
        return documents


_EXAMPLE_ANALYSIS = {
    "id": "doc-1",
    "title": "关于推动工业绿色发展的通知",
    "source": "api",
    "model_version": "2024-06-01-e5small",
    "labels": ["carbon"],
    "domains": {
        "carbon": {"label": "carbon", "paragraphs": 1, "share": 0.33, "char_share": 0.31, "max_score": 0.93,
                   "evidence": [{"paragraph_id": "doc-1#4", "index": 4, "score": 0.93, "excerpt": _EXAMPLE_PARAGRAPHS[2]}]},
    },
    "summary": {"text": "……", "sentences": [{"text": "……", "paragraph_id": "doc-1#4", "start": 120, "end": 152}]},
    "summary_error": None,
    "n_paragraphs": 5,
    "n_body_paragraphs": 3,
    "paragraphs": [{"id": "doc-1#4", "index": 4, "kind": "body", "text": _EXAMPLE_PARAGRAPHS[2], "labels": ["carbon"],
                    "scores": {"5g": 0.01, "sme": 0.03, "carbon": 0.93, "supply_chain": 0.05}}],
    "meta": {},
}


class AnalyzeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model_version": "2024-06-01-e5small", "documents": [_EXAMPLE_ANALYSIS]}]}
    )

    model_version: str = Field(description="Version of the model that produced every analysis of this response.")
    documents: list[dict[str, Any]] = Field(
        description="One analysis per input document, in input order: paragraph tags, document-level "
        "aggregation and summary (DocumentAnalysis.to_dict())."
    )


class LabelInfo(BaseModel):
    id: str
    name_zh: str
    name_en: str
    description: str = ""


class ModelInfo(BaseModel):
    version: str
    model_dir: str
    loaded_at: float = Field(description="Unix time the served model finished loading.")
    taxonomy: dict[str, Any] = Field(description="Taxonomy name and version.")
    labels: list[LabelInfo]
    thresholds: dict[str, float] = Field(description="Per-label decision threshold on calibrated scores.")
    temperature: dict[str, float] = Field(description="Per-label calibration temperature.")
    metrics: dict[str, Any] = Field(description="Evaluation metrics stored with the model.")
    limits: dict[str, int] = Field(description="Request limits of this server.")
    reload: dict[str, Any] = Field(description="Hot-swap state: watched source, last reload, last error.")


class Health(BaseModel):
    status: str = "ok"
    model_version: str


class ReloadResult(BaseModel):
    status: str = Field(description="`reloaded`, `unchanged` or `failed`.")
    model_version: str = Field(description="Version served after this call.")
    previous_version: str | None = None
    model_dir: str
    error: str | None = None


class ErrorBody(BaseModel):
    message: str = Field(description="One line naming the item and the problem.")
    detail: list[dict[str, Any]] = Field(description="Every problem: `loc` (where), `msg` (why), `type`.")
