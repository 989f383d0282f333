"""The committed equation registry: counts, pinned versions, spot checks typed by hand from the catalogs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import neural_memory.registry as registry_module
from neural_memory.registry import (
    KINDS,
    PAPERS,
    Equation,
    implements,
    load_registry,
    normalise_number,
    paper_meta,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
EXPECTED = {
    "titans": {"count": 35, "arxiv": "2501.00663", "version": "v1", "version_date": "2024-12-31"},
    "miras": {"count": 38, "arxiv": "2504.13173", "version": "v1", "version_date": "2025-04-17"},
    "nl": {"count": 121, "arxiv": "2512.24695", "version": "v1", "version_date": "2025-12-31"},
}


def _equations(paper: str) -> list[Equation]:
    return [eq for eq in load_registry().values() if eq.paper == paper]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses / typing need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("paper", PAPERS)
def test_count_and_pinned_version(paper):
    meta = paper_meta(paper)
    expected = EXPECTED[paper]
    assert len(_equations(paper)) == expected["count"] == meta["count"]
    assert (meta["arxiv"], meta["version"], meta["version_date"]) == (
        expected["arxiv"],
        expected["version"],
        expected["version_date"],
    )
    assert meta["paper"] == paper
    assert meta["title"] and meta["authors"] and "catalog" in meta["source"]


@pytest.mark.parametrize("paper", PAPERS)
def test_numbers_are_contiguous_from_one(paper):
    numbers = [eq.number for eq in _equations(paper)]
    ints = [n for n in numbers if isinstance(n, int)]
    names = [n for n in numbers if not isinstance(n, int)]
    assert ints == list(range(1, len(ints) + 1))
    assert names == (["FTRL-VP", "LR-VP"] if paper == "miras" else [])


def test_miras_named_displays_sit_after_eq_7_in_catalog_order():
    numbers = [eq.number for eq in _equations("miras")]
    assert numbers[6:10] == [7, "FTRL-VP", "LR-VP", 8]


def test_every_entry_has_latex_kind_and_confidence():
    for key, eq in load_registry().items():
        assert eq.kind in KINDS, key
        assert eq.confidence in ("high", "medium", "low"), key
        assert eq.name.strip() and eq.section.strip(), key
        assert eq.latex.strip(), key  # NL 36 keeps the catalog's bracketed note
        assert eq.na is None or eq.na.strip(), key


def test_nl_36_is_an_empty_numbered_line_marked_na():
    eq = load_registry()[("nl", 36)]
    assert "no display" in eq.latex.lower()
    assert eq.na is not None and "empty numbered line" in eq.na.lower()


def test_nl_95_is_recovered_as_self_generated_values():
    eq = load_registry()[("nl", 95)]
    assert eq.na is None
    assert r"\hat{\mathbf v}" in eq.latex and r"\mathcal M_{\square,t-1}" in eq.latex
    assert not [key for key, eq in load_registry().items() if "lost in conversion" in eq.latex.lower()]


def test_no_titans_equation_is_marked_na_yet():
    assert [eq.number for eq in _equations("titans") if eq.na is not None] == []


def test_json_fields_match_the_equation_dataclass():
    fields = {f.name for f in dataclasses.fields(Equation)}
    for paper in PAPERS:
        text = (REPO / "src" / "neural_memory" / "registry" / "data" / f"{paper}.json").read_text("utf-8")
        for row in json.loads(text)["equations"]:
            assert set(row) | {"paper"} == fields


# Spot checks against the catalog text, typed by hand.
@pytest.mark.parametrize(
    ("key", "name", "section", "kind", "latex_piece"),
    [
        (
            ("titans", 1),
            "Q/K/V projections of causal attention",
            "§2.1",
            "background",
            r"x\mathbf{W}_{\mathrm{Q}}",
        ),
        (("titans", 13), "memory update with forget gate", "§3.1", "implement", r"(1-\alpha_t)"),
        (
            ("titans", 17),
            "matmul form of chunk gradient (linear memory)",
            "§3.2",
            "derivation",
            r"\nabla\ell(W_0; x_t)",
        ),
        (("titans", 32), "linear LMM recurrence state", "App. C", "derivation", r"\mathrm{diag}(1-\alpha_t)"),
        (("miras", 24), "Moneta recurrence", "§5.3", "implement", r"\nabla\ell_p(W_{i-1}"),
        (
            ("miras", "FTRL-VP"),
            "FTRL viewpoint (named tag)",
            "§3.2",
            "definition",
            r"\frac{1}{\eta_t}\mathcal{R}_t(W)",
        ),
        (
            ("miras", "LR-VP"),
            "Learning-Retaining viewpoint (named tag)",
            "§3.3",
            "definition",
            r"\mathrm{Ret}_t",
        ),
        (("nl", 53), "toy time-varying-curvature objective", "§4.4, Fig. 4", "implement", ""),
        (("nl", 121), "final DGD form", "App. C", "implement", ""),
    ],
)
def test_spot_checks_against_the_catalog(key, name, section, kind, latex_piece):
    eq = load_registry()[key]
    assert (eq.name, eq.section, eq.kind) == (name, section, kind)
    assert latex_piece in eq.latex


def test_multi_display_entry_keeps_every_display():
    # NL Eq. 90 is printed as three displays (read-outs, self-generated values, update).
    lines = load_registry()[("nl", 90)].latex.splitlines()
    assert len(lines) == 3
    assert r"\hat{\mathbf v}_{\square,t}" in lines[1]


def test_normalise_number():
    assert normalise_number("13") == 13
    assert normalise_number(13) == 13
    assert normalise_number("FTRL-VP") == "FTRL-VP"
    with pytest.raises(TypeError, match="equation number"):
        normalise_number(True)
    with pytest.raises(TypeError, match="equation number"):
        normalise_number(1.5)


def test_implements_rejects_an_unknown_paper():
    with pytest.raises(ValueError, match="paper must be one of"):
        implements("attention-is-all-you-need", 1)
    with pytest.raises(ValueError, match="at least one equation number"):
        implements("titans")


def test_implements_records_module_and_qualname(monkeypatch):
    claims: dict = {}
    objects: dict = {}
    monkeypatch.setattr(registry_module, "_IMPLEMENTATIONS", claims)
    monkeypatch.setattr(registry_module, "_CLAIMED_OBJECTS", objects)

    class Memory:
        @implements("titans", 13, "14")
        def update(self):
            return "unchanged"

    assert Memory().update() == "unchanged"
    where = f"{__name__}:test_implements_records_module_and_qualname.<locals>.Memory.update"
    assert claims == {("titans", 13): [where], ("titans", 14): [where]}
    assert Memory.update.__equations__ == (("titans", 13), ("titans", 14))
    assert registry_module.claimed_object(where) is Memory.update  # the plugin watches its code
    assert objects == {where: Memory.update}


def test_discovery_finds_no_claim_outside_the_registry_papers():
    claims = registry_module.discover_implementations()
    assert all(paper in PAPERS for paper, _ in claims)
    assert all(":" in where for wheres in claims.values() for where in wheres)
    assert all(registry_module.claimed_object(w) is not None for wheres in claims.values() for w in wheres)


# ---------------------------------------------------------------------------------------------------
# scripts/build_registry.py on a synthetic catalog (no dependency on /work/shared)
# ---------------------------------------------------------------------------------------------------

SYNTHETIC_CATALOG = """\
# Titans — synthetic catalog, arXiv:2501.00663 v1

### Titans Eq. 1 — first (§2.1)
$$a = b$$
- Kind: `background`
- Confidence: high

### Titans Eq. 2 — second, two displays (§3.1)
$$c = d$$
with (prose) $e$.
$$
f = g
$$
- Kind: implement
- Symbols: $$not = latex$$
- Confidence: medium

## 5. Machine-readable index

```csv
paper,number,name,section,kind,confidence
titans,1,first,2.1,background,high
titans,2,"second, from the CSV",C,implement,medium
```
"""


def test_build_script_parses_entries_and_csv(monkeypatch, tmp_path):
    build = _load_script("build_registry")
    monkeypatch.setitem(build.PAPERS, "titans", {**build.PAPERS["titans"], "count": 2})
    catalog = tmp_path / "titans.md"
    catalog.write_text(SYNTHETIC_CATALOG, "utf-8")
    data = build.build_paper("titans", catalog, {"2": "covered by Eq. 1"})
    assert data["count"] == 2 and data["arxiv"] == "2501.00663"
    first, second = data["equations"]
    assert first == {
        "number": 1,
        "name": "first",
        "section": "§2.1",
        "kind": "background",
        "latex": "a = b",
        "confidence": "high",
        "na": None,
    }
    assert second["name"] == "second, from the CSV"  # the CSV wins over the heading
    assert second["section"] == "App. C"
    assert second["latex"] == "c = d\nf = g"  # bullets' $$ are not the entry's display
    assert second["na"] == "covered by Eq. 1"


def test_build_script_rejects_a_wrong_count_and_an_unknown_na(monkeypatch, tmp_path):
    build = _load_script("build_registry")
    catalog = tmp_path / "titans.md"
    catalog.write_text(SYNTHETIC_CATALOG, "utf-8")
    with pytest.raises(SystemExit, match="expected 35 equations"):
        build.build_paper("titans", catalog, {})
    monkeypatch.setitem(build.PAPERS, "titans", {**build.PAPERS["titans"], "count": 2})
    with pytest.raises(SystemExit, match="has no equations"):
        build.build_paper("titans", catalog, {"7": "no such equation"})


@pytest.mark.skipif(not (SHARED / "papers").is_dir(), reason="paper catalogs not available")
def test_committed_registry_is_the_fresh_build_of_the_catalogs():
    build = _load_script("build_registry")
    assert build.main(["--shared", str(SHARED), "--check"]) == 0
