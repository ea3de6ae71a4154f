import pytest

from policylens.io import InputError
from policylens.taxonomy import Label, Taxonomy


def test_default_taxonomy_has_the_four_domains():
    taxonomy = Taxonomy.load()
    assert taxonomy.ids == ["5g", "sme", "carbon", "supply_chain"]
    assert taxonomy.multi_hot(["carbon", "5g"]) == [1.0, 0.0, 1.0, 0.0]


def test_a_user_can_add_a_domain_and_save_it(tmp_path):
    taxonomy = Taxonomy.load().with_label(Label("smart_mfg", "智能制造与数字化转型", "Smart manufacturing"))
    taxonomy.save(tmp_path / "t.json")
    again = Taxonomy.load(tmp_path / "t.json")
    assert again.ids[-1] == "smart_mfg" and again.ids[:4] == ["5g", "sme", "carbon", "supply_chain"]
    with pytest.raises(ValueError, match="already"):
        again.with_label(Label("sme", "x", "y"))


def test_bad_taxonomy_files_are_named(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"labels": [{"id": "Bad Id", "name_zh": "x", "name_en": "y"}]}', encoding="utf-8")
    with pytest.raises(InputError, match=str(path)):
        Taxonomy.load(path)
    with pytest.raises(InputError, match="not found"):
        Taxonomy.load(tmp_path / "missing.json")
