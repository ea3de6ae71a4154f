"""The tag set is data (data/taxonomy.json), not code: users can add a domain."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from policylens.io import InputError, write_json
from policylens.paths import DATA_DIR

DEFAULT_TAXONOMY_PATH = DATA_DIR / "taxonomy.json"
_LABEL_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Label:
    id: str
    name_zh: str
    name_en: str
    description: str = ""
    # Only the keyword-rule baseline reads these; the tagger learns from labelled data.
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keywords", tuple(self.keywords))
        if not _LABEL_ID.match(self.id):
            raise ValueError(f"label id {self.id!r}: use lowercase letters, digits and _ (max 32)")


@dataclass
class Taxonomy:
    labels: list[Label]
    name: str = "custom"
    version: int = 1
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = [label.id for label in self.labels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"taxonomy {self.name}: duplicate label ids {duplicates}")
        self._index = {label_id: i for i, label_id in enumerate(ids)}

    @property
    def ids(self) -> list[str]:
        return [label.id for label in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._index

    def index(self, label_id: str) -> int:
        return self._index[label_id]

    def multi_hot(self, label_ids: list[str]) -> list[float]:
        vector = [0.0] * len(self.labels)
        for label_id in label_ids:
            vector[self._index[label_id]] = 1.0
        return vector

    def with_label(self, label: Label) -> "Taxonomy":
        """A new taxonomy with `label` appended (existing label order is kept: model heads depend on it)."""
        if label.id in self:
            raise ValueError(f"label {label.id!r} is already in taxonomy {self.name}")
        return Taxonomy(labels=[*self.labels, label], name=self.name, version=self.version + 1)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "labels": [{**asdict(label), "keywords": list(label.keywords)} for label in self.labels]}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict, origin: str = "<dict>") -> "Taxonomy":
        try:
            labels = [Label(**row) for row in obj["labels"]]
            return cls(labels=labels, name=obj.get("name", "custom"), version=int(obj.get("version", 1)))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{origin}: not a valid taxonomy ({err})") from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Taxonomy":
        path = Path(path) if path else DEFAULT_TAXONOMY_PATH
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: taxonomy file not found") from None
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg})") from None
        return cls.from_dict(obj, origin=str(path))
