"""The model registry: immutable version dirs, a gate, and an atomically switched CURRENT pointer.

Layout under `models/registry/`:

  v0001/ v0002/ ...   complete tagger dirs (loadable by Predictor) + registry.json
                      (+ report.md/report.json from retraining) + files.sha256.json,
                      the sha256 of every file, written when the version is registered
  CURRENT             the served version's name; replaced with os.replace, so a
                      server watching it (`policylens serve --registry`) only ever
                      reads a whole name, and only of a fully registered version
  history.jsonl       promote / rollback events (rollback pops the promotion stack)
  splits.json         document -> split of every document ever trained on; the
                      test documents recorded on first training never move
  .staging-<pid>-*    a training in progress (or the leftovers of a killed one)

A version appears only by renaming a finished staging dir (one atomic step),
so a crash mid-training leaves CURRENT and every version untouched.

Promoting or rolling back to a version first runs
policylens.tagger.integrity.check_model_dir on it (hashes, files, weights, a
smoke-set scoring) and refuses a version that fails; `verify(deep=True)` runs
it on every version. Version names may be given as paths (`v0002/`,
`./v0002`, `models/registry/v0002`): they are normalised to `v0002`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policylens.io import (
    InputError,
    atomic_write,
    read_jsonl,
    utc_timestamp,
    write_json,
)
from policylens.paths import MODELS_DIR
from policylens.tagger.integrity import check_model_dir, first_problem
from policylens.tagger.model_dir import (
    MANIFEST_FILE,
    read_json_file,
    verify_manifest,
    write_manifest,
)

DEFAULT_REGISTRY_DIR = MODELS_DIR / "registry"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.jsonl"
SPLITS_FILE = "splits.json"
INFO_FILE = "registry.json"
LOCK_FILE = "LOCK"
_VERSION = re.compile(r"^v(\d{4,})$")
_PID = re.compile(r"staging-(\d+)-")


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


DROP_RULES = ("point", "significant")


@dataclass
class GateConfig:
    """Promotion margins, in absolute F1 on the fixed test split.

    `drop_rule="point"` fails any drop over its margin. `"significant"` forgives
    such a drop when the 90% paired-bootstrap interval of the change still
    reaches 0: with ~50 positives per domain a 0.03 drop is often noise, and a
    small test split should not block a model on noise alone.
    """

    max_macro_drop: float = 0.01
    max_domain_drop: float = 0.03
    require_new_learned: bool = True
    drop_rule: str = "point"

    def __post_init__(self) -> None:
        if not (0 <= self.max_macro_drop <= 1 and 0 <= self.max_domain_drop <= 1):
            raise ValueError("gate margins must be in [0, 1]")
        if self.drop_rule not in DROP_RULES:
            raise ValueError(f"drop_rule must be one of {', '.join(DROP_RULES)}, got {self.drop_rule!r}")


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # why not (or notes when promoted)
    checks: list[dict] = field(default_factory=list)  # every comparison made, passed or not
    # checks that passed on the point estimate although their 90% interval reaches past the margin: worth a
    # reader's look before promoting (a small test split cannot tell such a drop from noise either way)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": self.reasons, "checks": self.checks, "warnings": self.warnings}


def _macro(report: dict, labels: list[str]) -> float:
    """Macro-F1 over `labels` that have test support (as the multilabel_f1 metric averages)."""
    present = [l for l in labels if report["per_label"].get(l, {}).get("support", 0) > 0] or labels
    values = [report["per_label"].get(l, {}).get("f1", 0.0) for l in present]
    return float(sum(values) / len(values)) if values else 0.0


def _drop_check(name: str, what: str, old: float, new: float, margin: float, config: GateConfig,
                interval: tuple[float, float] | None, extra: dict | None = None) -> tuple[dict, str | None]:
    """One "did it fall by more than the margin" check, and the reason when it fails."""
    check = {"check": name, "old": round(old, 4), "new": round(new, 4), **(extra or {}), "max_drop": margin}
    over = old - new > margin + 1e-9
    if over and config.drop_rule == "significant" and interval is not None and interval[1] >= 0:
        check["note"] = (f"drop {old - new:.3f} > margin {margin}, but its 90% interval "
                         f"({interval[0]:+.3f} … {interval[1]:+.3f}) reaches 0: forgiven as noise")
        over = False
    check["passed"] = not over
    if not over and interval is not None and interval[0] < -margin - 1e-9:
        check["warning"] = (f"{what} passed ({old:.3f} -> {new:.3f}), but the 90% interval of the change reaches "
                            f"{interval[0]:+.3f}, past the margin of {margin}: read its changed predictions before "
                            "promoting")
    reason = f"{what} fell {old:.3f} -> {new:.3f} on the fixed test split (drop {old - new:.3f} > margin {margin})"
    if over and config.drop_rule == "significant":
        reason += " and the 90% interval of the change is below 0" if interval else " (no interval to judge noise)"
    return check, reason if over else None


def gate(
    old_test: dict | None,
    new_test: dict,
    old_domains: list[str],
    *,
    old_new_dev: dict | None = None,
    new_new_dev: dict | None = None,
    change_intervals: dict[str, tuple[float, float]] | None = None,
    config: GateConfig | None = None,
) -> GateDecision:
    """Promote only if old domains keep their F1 on the fixed test split and the new data is learned.

    The macro check averages over the *old* domains only, so a gain on a new
    domain cannot hide a loss on an old one. Reports are multilabel_f1 results
    (old and new model scored on the same rows); `*_new_dev` are scores on the
    dev rows that are new since the old model's data version; `change_intervals`
    (per old domain and "macro_f1") are used by the "significant" drop rule.
    """
    config = config or GateConfig()
    if old_test is None:
        return GateDecision(True, ["no current model: the first version is promoted"], [])
    intervals = change_intervals or {}
    reasons: list[str] = []
    checks: list[dict] = []
    check, reason = _drop_check("macro_f1_old_domains", "macro-F1 over the old domains", _macro(old_test, old_domains),
                                _macro(new_test, old_domains), config.max_macro_drop, config, intervals.get("macro_f1"))
    checks.append(check)
    reasons += [reason] if reason else []
    for label in old_domains:
        support = new_test["per_label"].get(label, {}).get("support", 0)
        if support == 0:
            continue
        check, reason = _drop_check(f"f1_{label}", f"domain {label!r} F1", old_test["per_label"][label]["f1"],
                                    new_test["per_label"][label]["f1"], config.max_domain_drop, config,
                                    intervals.get(label), {"support": support})
        checks.append(check)
        reasons += [reason] if reason else []
    if config.require_new_learned:
        if old_new_dev is None or new_new_dev is None:
            checks.append({"check": "new_data_learned", "passed": True, "note": "no new dev rows: not checked"})
        else:
            old_f1, new_f1 = old_new_dev["micro_f1"], new_new_dev["micro_f1"]
            ok = new_f1 > old_f1 or new_f1 >= 0.999
            checks.append({"check": "new_data_learned", "old": round(old_f1, 4), "new": round(new_f1, 4),
                           "rows": new_new_dev.get("n"), "passed": ok})
            if not ok:
                reasons.append(f"the new data is not learned: micro-F1 on its dev rows {old_f1:.3f} (old model) -> "
                               f"{new_f1:.3f} (new model), no improvement")
    return GateDecision(not reasons, reasons, checks, [c["warning"] for c in checks if "warning" in c])


@dataclass
class VerifyReport:
    leftovers: list[Path] = field(default_factory=list)  # dead staging/temp entries (removed when cleaned)
    in_progress: list[Path] = field(default_factory=list)  # staging of a live process: left alone
    broken: list[str] = field(default_factory=list)  # versions or pointer that cannot be served
    notes: list[str] = field(default_factory=list)  # worth knowing, not failures (e.g. no file hashes recorded)
    cleaned: bool = False

    @property
    def ok(self) -> bool:
        return not self.broken and (self.cleaned or not self.leftovers)


class Registry:
    """Model versions under `root`; `current_dir()` is what a server should load."""

    def __init__(self, root: str | Path = DEFAULT_REGISTRY_DIR) -> None:
        self.root = Path(root)

    # -- reading --------------------------------------------------------------

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if _VERSION.match(p.name) and (p / INFO_FILE).exists()]
        return sorted(names, key=lambda n: int(_VERSION.match(n).group(1)))  # type: ignore[union-attr]

    def path(self, version: str) -> Path:
        return self.root / version

    def _unknown(self, version: str) -> InputError:
        known = ", ".join(self.versions()) or "none"
        return InputError(f"{self.root}: no registered version {version!r} (known versions: {known})")

    def resolve(self, version: str) -> str:
        """The registered version `version` means: `v0002`, `v0002/`, `./v0002` and `<registry>/v0002` are all v0002.

        Anything else (a path into another folder, an unknown name) is an InputError listing the known versions.
        """
        raw = str(version).strip()
        candidate = Path(raw)
        name = candidate.name
        parent = candidate.parent
        inside = str(parent) in ("", ".") or _same_dir(parent, self.root)
        if not raw or not _VERSION.match(name) or not inside:
            raise self._unknown(raw)
        if not (self.path(name) / INFO_FILE).exists():
            raise self._unknown(raw)
        return name

    def info(self, version: str) -> dict:
        name = self.resolve(version)
        obj = read_json_file(self.path(name) / INFO_FILE)
        if not isinstance(obj, dict):
            raise InputError(f"{self.path(name) / INFO_FILE}: expected a JSON object, got {type(obj).__name__}")
        return obj

    def current(self) -> str | None:
        """The name CURRENT holds (a trailing slash or `./` written by older versions is dropped)."""
        pointer = self.root / CURRENT_FILE
        if not pointer.exists():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        return Path(name).name if name else None

    def current_dir(self) -> Path | None:
        name = self.current()
        return self.path(name) if name else None

    def history(self) -> list[dict]:
        path = self.root / HISTORY_FILE
        return [event for _, event in read_jsonl(path)] if path.exists() else []

    # -- writing --------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A not-yet-existing path inside the registry to train into; removed (with its siblings) on failure."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            yield path
        except BaseException:
            self._remove_staging(path)
            raise
        self._remove_staging(path)  # registered versions were renamed away already

    def _remove_staging(self, path: Path) -> None:
        for entry in self.root.glob(f"*{path.name}*"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def register(self, staged: Path, info: dict[str, Any]) -> str:
        """Write registry.json and the file hashes into a complete staged model dir, then rename it to the next version.

        A staged dir saved with a manifest (save_tagger writes one) must still match it:
        a file that changed between training and registration is refused.
        """
        if not (staged / "policylens.json").exists() or not (staged / "model.safetensors").exists():
            raise InputError(f"{staged}: not a complete tagger dir; refusing to register it")
        try:
            verify_manifest(staged)
        except InputError as err:
            raise InputError(f"refusing to register {staged}: {err}") from None
        with self.locked():
            existing = [int(_VERSION.match(p.name).group(1)) for p in self.root.iterdir() if _VERSION.match(p.name)]  # type: ignore[union-attr]
            name = f"v{max(existing, default=0) + 1:04d}"
            write_json(staged / INFO_FILE, {"version": name, "created": utc_timestamp(), **info})
            write_manifest(staged)  # every file, registry.json included: what `verify` and `promote` compare
            os.rename(staged, self.path(name))  # the one step that makes a version exist
        return name

    def _set_current(self, name: str, action: str, previous: str | None, note: str = "") -> None:
        with atomic_write(self.root / CURRENT_FILE) as handle:
            handle.write(name + "\n")
        os.chmod(self.root / CURRENT_FILE, 0o644)  # mkstemp's 0600 would hide it from a server running as another user
        event = {"time": utc_timestamp(), "action": action, "from": previous, "to": name, **({"note": note} if note else {})}
        path = self.root / HISTORY_FILE
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        with atomic_write(path) as handle:
            handle.write(old + json.dumps(event, ensure_ascii=False) + "\n")

    def check(self, version: str) -> list[str]:
        """check_model_dir on a registered version: [] when it can be served."""
        return check_model_dir(self.path(self.resolve(version)))

    def _refuse_unservable(self, name: str, action: str) -> None:
        problems = self.check(name)
        if problems:
            raise InputError(f"refusing to {action} {name}: {first_problem(problems)}")

    def promote(self, version: str, note: str = "") -> str:
        """Point CURRENT at `version` (any registered one that passes check_model_dir: the gate advises,
        people decide); returns the normalised name."""
        name = self.resolve(version)
        self._refuse_unservable(name, "promote")  # outside the lock: it loads the model; versions never change
        with self.locked():
            self.resolve(name)
            self._set_current(name, "promote", self.current(), note)
        return name

    def _stack(self) -> list[str]:
        stack: list[str] = []
        for event in self.history():
            if event["action"] == "promote":
                stack.append(Path(str(event["to"]).strip()).name)  # `v0002/` recorded by older versions
            elif event["action"] == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self) -> str:
        """Return to the version promoted before the current one; repeated rollbacks go further back.

        The target must pass check_model_dir like a promotion; a broken one is refused
        (promote a sound version by name instead)."""
        with self.locked():
            stack = self._stack()
            if len(stack) < 2:
                raise InputError(f"{self.root}: nothing to roll back to (promotion history: {stack})")
            target = self.resolve(stack[-2])
            self._refuse_unservable(target, "roll back to")
            self._set_current(target, "rollback", stack[-1])
            return target

    # -- the fixed split ------------------------------------------------------

    def split_assignments(self) -> dict[str, str]:
        """doc_id -> split of every document a registered version was trained/tested on."""
        path = self.root / SPLITS_FILE
        return json.loads(path.read_text(encoding="utf-8"))["assignments"] if path.exists() else {}

    def test_doc_ids(self) -> list[str]:
        path = self.root / SPLITS_FILE
        return json.loads(path.read_text(encoding="utf-8"))["test_doc_ids"] if path.exists() else []

    def split_moves(self) -> list[dict]:
        """Documents moved deliberately between splits (`move_document`), oldest first."""
        path = self.root / SPLITS_FILE
        return json.loads(path.read_text(encoding="utf-8")).get("moves", []) if path.exists() else []

    def move_document(self, doc_id: str, split: str, note: str) -> dict:
        """Put a known document into another split from the next retraining on, with the reason.

        A document keeps its split for good, so corrections to a test document re-score the gate and
        train nothing; this is the deliberate way out (or in). The move is recorded with the version
        then current, and the next gate report says the yardstick changed.
        """
        from policylens.dataset import SPLITS

        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if not note.strip():
            raise InputError("say why the document moves (--note): the gate report shows it")
        with self.locked():
            path = self.root / SPLITS_FILE
            if not path.exists():
                raise InputError(f"{path}: no version has recorded its splits yet, so there is nothing to move")
            obj = json.loads(path.read_text(encoding="utf-8"))
            old = obj["assignments"].get(doc_id)
            if old is None:
                raise InputError(f"document {doc_id!r} is in no recorded split ({len(obj['assignments'])} documents "
                                 f"are; see {path})")
            if old == split:
                raise InputError(f"document {doc_id!r} is already in {split}")
            move = {"doc_id": doc_id, "from": old, "to": split, "note": note.strip(), "at": utc_timestamp(),
                    "current": self.current()}
            obj["assignments"][doc_id] = split
            obj["test_doc_ids"] = sorted({d for d in obj["test_doc_ids"] if d != doc_id} | ({doc_id} if split == "test" else set()))
            obj["moves"] = [*obj.get("moves", []), move]
            write_json(path, obj)
        return move

    def record_splits(self, assignments: dict[str, str], version: str) -> None:
        """Add new documents' splits; known documents keep theirs (the test ids are fixed on first write)."""
        with self.locked():
            path = self.root / SPLITS_FILE
            obj = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
            merged = dict(assignments)
            if obj:
                merged.update(obj["assignments"])
            test_ids = obj["test_doc_ids"] if obj else sorted(d for d, s in assignments.items() if s == "test")
            write_json(path, {"first_version": obj["first_version"] if obj else version, "updated": utc_timestamp(),
                              "test_doc_ids": test_ids, "assignments": dict(sorted(merged.items())),
                              "moves": obj.get("moves", []) if obj else []})

    # -- consistency ----------------------------------------------------------

    def verify(self, clean: bool = False, deep: bool = False) -> VerifyReport:
        """Find (and with `clean`, remove) leftovers of killed trainings; flag versions that cannot be served.

        deep: also run check_model_dir on every version (file hashes, loading, the smoke set):
        what `policylens models verify` does; retraining's quick pre-check leaves it off.
        """
        report = VerifyReport()
        if not self.root.is_dir():
            return report
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                match = _PID.search(entry.name)
                if match and int(match.group(1)) != os.getpid() and _pid_alive(int(match.group(1))):
                    report.in_progress.append(entry)
                elif match and int(match.group(1)) == os.getpid():
                    report.in_progress.append(entry)
                else:
                    report.leftovers.append(entry)
            elif _VERSION.match(entry.name):
                missing = [f for f in (INFO_FILE, "policylens.json", "model.safetensors") if not (entry / f).exists()]
                if missing:
                    report.broken.append(f"{entry.name}: missing {', '.join(missing)}")
                elif deep:
                    report.broken += [f"{entry.name}: {problem}" for problem in check_model_dir(entry)]
                    if not (entry / MANIFEST_FILE).exists():
                        report.notes.append(f"{entry.name}: no {MANIFEST_FILE} (registered before file hashes were "
                                            "recorded): loaded and smoke-tested only")
        current = self.current()
        if current is not None and current not in self.versions():
            report.broken.append(f"{CURRENT_FILE} names {current!r}, which is not a registered version")
        if clean:
            for entry in report.leftovers:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            report.cleaned = True
        return report
