"""Is a tagger directory safe to serve? One check shared by `models verify`, `models promote` and the server.

`check_model_dir(path)` returns the problems it finds (empty when the model is
fine), each one line naming the file and what is wrong:

1. every file recorded in files.sha256.json still has its size and sha256
   (a version saved before manifests existed has none: that check is skipped);
2. policylens.json, config.json and tokenizer.json parse and make sense;
3. model.safetensors is a valid safetensors file whose tensors are all finite;
4. the tagger loads and scores the built-in smoke set
   (policylens.tagger.scoring.SMOKE_PARAGRAPHS) with every score finite and in [0, 1].

A problem found by 2-3 is listed before a hash mismatch of the same file (it says
more); the smoke test runs only when 2-3 pass (it could not load otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policylens.io import InputError
from policylens.tagger.model_dir import (
    CONFIG_FILE,
    META_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    TaggerMeta,
    check_safetensors_header,
    manifest_findings,
    one_line,
    read_model_config,
)
from policylens.tagger.scoring import SMOKE_PARAGRAPHS, score_problems


def check_weights(model_dir: str | Path) -> None:
    """InputError unless model.safetensors is valid and every floating-point tensor in it is finite.

    Reads one tensor at a time, so the extra memory is one tensor, not the model.
    """
    from safetensors import safe_open

    path = Path(model_dir) / WEIGHTS_FILE
    names = check_safetensors_header(model_dir)
    framework = "numpy"
    try:
        with safe_open(str(path), framework=framework) as handle:
            for name in names:
                try:
                    tensor = handle.get_tensor(name)
                except Exception:  # noqa: BLE001 - numpy has no bfloat16: read such a file through torch
                    framework = "pt"
                    break
                if np.issubdtype(tensor.dtype, np.floating) and not np.isfinite(tensor).all():
                    raise InputError(f"{path}: tensor {name!r} holds NaN or infinite values (corrupt weights)")
        if framework == "pt":
            import torch

            with safe_open(str(path), framework="pt") as handle:
                for name in names:
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        raise InputError(f"{path}: tensor {name!r} holds NaN or infinite values (corrupt weights)")
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a file that passed the header check but cannot be read
        raise InputError(f"{path}: cannot read the tensors ({type(err).__name__}: {one_line(err)})") from None


def _check_tokenizer(model_dir: Path) -> None:
    from tokenizers import Tokenizer

    path = model_dir / TOKENIZER_FILE
    if not path.exists():
        raise InputError(f"{model_dir}: no tokenizer.json (save the tagger with a fast tokenizer)")
    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - the Rust loader raises a bare Exception
        raise InputError(f"{path}: not a valid tokenizer file ({one_line(err)})") from None


def _smoke(model_dir: Path, tagger: Any, num_threads: int | None) -> list[str]:
    """Load the tagger (unless given) and score the smoke set."""
    if tagger is None:
        import torch
        from transformers.utils import logging as hf_logging

        from policylens.tagger.scoring import Tagger

        threads_before = torch.get_num_threads()
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # `models verify` loads every version: one line each, no bars
        try:
            tagger = Tagger(model_dir, num_threads=num_threads, check_files=False)  # hashes: compared above
        finally:
            torch.set_num_threads(threads_before)  # a check must not change the caller's thread pool
            if bar_was_on:
                hf_logging.enable_progress_bar()
    probs = tagger.predict_proba(list(SMOKE_PARAGRAPHS))
    return score_problems(model_dir, probs)


def check_model_dir(model_dir: str | Path, *, tagger: Any = None, num_threads: int | None = None) -> list[str]:
    """Problems that make `model_dir` unfit to serve (see the module docstring); [] when it is fine.

    tagger: an already loaded Tagger/Predictor of this dir (the server's hot swap passes
    the one it is about to serve), scored instead of loading the model a second time.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [f"{model_dir}: no such model directory"]
    problems: list[str] = []
    named: set[str] = set()

    def attempt(name: str, check) -> None:
        try:
            check()
        except InputError as err:
            problems.append(str(err))
            named.add(name)
        except Exception as err:  # noqa: BLE001 - any failure is a finding, never a traceback
            problems.append(f"{model_dir / name}: {type(err).__name__}: {one_line(err)}")
            named.add(name)

    attempt(META_FILE, lambda: TaggerMeta.load(model_dir))
    attempt(CONFIG_FILE, lambda: read_model_config(model_dir))
    attempt(TOKENIZER_FILE, lambda: _check_tokenizer(model_dir))
    attempt(WEIGHTS_FILE, lambda: check_weights(model_dir))
    loadable = not problems
    problems += [message for name, message in manifest_findings(model_dir) if name not in named]
    if loadable:
        try:
            problems += _smoke(model_dir, tagger, num_threads)
        except InputError as err:
            problems.append(str(err))
        except Exception as err:  # noqa: BLE001
            problems.append(f"{model_dir}: the tagger does not load or score ({type(err).__name__}: {one_line(err)})")
    return list(dict.fromkeys(problems))  # one line per problem, each once


def first_problem(problems: list[str]) -> str:
    """The line to show when only one fits: the first problem, and how many more there are."""
    if not problems:
        return ""
    return problems[0] + (f" (and {len(problems) - 1} more: run `policylens models verify`)" if len(problems) > 1 else "")
