"""The papers' numbers the claims table quotes, copied from the pinned versions (the project never reads the
paper catalogs at run time).

Titans arXiv:2501.00663v1, MIRAS arXiv:2504.13173v1, Nested Learning (NL) arXiv:2512.24695v1. Perplexities
are the papers' WikiText perplexities (lower is better); we measure bits per byte on our own byte-level data,
so only the *direction* of a comparison is tested, never the value.
"""

from __future__ import annotations

# Titans v1 Table 5 (ablation; base LMM, one change at a time): LM ppl, reasoning acc, long-context acc.
TITANS_TABLE5: dict[str, tuple[float, float, float]] = {
    "LMM": (27.01, 47.83, 92.68),
    "+Attn (MAC)": (26.67, 48.65, 97.95),
    "+Attn (MAG)": (25.70, 48.60, 96.70),
    "+Attn (MAL)": (25.91, 47.87, 96.91),
    "Linear Memory": (28.49, 46.97, 85.34),
    "w/o Convolution": (28.73, 45.82, 90.28),
    "w/o Momentum": (28.98, 45.49, 87.12),
    "w/o Weight Decay": (29.04, 45.11, 85.60),
    "w/o Persistent Memory": (27.63, 46.35, 92.49),
}

# Titans v1 Table 1, 340M params / 15B tokens: WikiText perplexity.
TITANS_TABLE1_340M_WIKI: dict[str, float] = {
    "Transformer++": 31.52,
    "DeltaNet": 28.65,
    "Gated DeltaNet": 27.01,
    "Titans (LMM)": 26.18,
    "Titans (MAC)": 25.43,
    "Titans (MAG)": 25.07,
    "Titans (MAL)": 24.69,
}

# MIRAS v1 Table 2: WikiText perplexity at 340M/15B and 1.3B/100B.
MIRAS_TABLE2_WIKI: dict[str, dict[str, float]] = {
    "340M": {
        "Transformer++": 31.52,
        "Gated DeltaNet": 27.01,
        "Moneta": 26.19,
        "Yaad": 26.61,
        "Memora": 27.16,
    },
    "1.3B": {
        "Transformer++": 18.53,
        "Gated DeltaNet": 16.42,
        "Moneta": 15.52,
        "Yaad": 15.18,
        "Memora": 15.90,
    },
}

# MIRAS v1 Table 2, 760M/30B: WikiText perplexity of the three models and their Samba-style "-H" hybrids.
MIRAS_TABLE2_760M_HYBRID_WIKI: dict[str, float] = {
    "Moneta": 21.18,
    "Yaad": 20.99,
    "Memora": 22.28,
    "Moneta-H": 18.72,
    "Yaad-H": 18.59,
    "Memora-H": 18.24,
}

# NL v1 Table 2, 760M/30B: WikiText perplexity.
NL_TABLE2_760M_WIKI: dict[str, float] = {"Hope": 18.68, "Titans": 20.08, "Transformer++": 24.18}

# NL v1 Table 3 (short in-context recall), SWDE column: accuracy %.
NL_TABLE3_SWDE: dict[str, float] = {"Transformers": 71.4, "Hope": 65.9, "Titans": 60.8}

# Titans v1 Table 2 (RULER S-NIAH-N, a number in natural text), accuracy % at 2K / 16K.
TITANS_TABLE2_NIAH_N: dict[str, tuple[float, float]] = {
    "DeltaNet": (47.2, 5.4),
    "Titans (LMM)": (100.0, 80.2),
    "Titans (MAC)": (99.6, 97.4),
}

# Titans v1 Table 2 (RULER S-NIAH accuracy %): PK 2K/4K/8K/16K, N 2K/4K/8K/16K, W 2K/4K/8K/16K.
TITANS_TABLE2_NIAH: dict[str, tuple[float, ...]] = {
    "TTT": (98.4, 98.8, 98.0, 88.4, 60.2, 36.6, 10.2, 4.4, 78.8, 28.0, 4.4, 0.0),
    "Mamba2": (98.6, 61.4, 31.0, 5.4, 98.4, 55.8, 14.2, 0.0, 42.2, 4.2, 0.0, 0.0),
    "DeltaNet": (96.8, 98.8, 98.6, 71.4, 47.2, 15.4, 12.8, 5.4, 46.2, 20.0, 1.6, 0.0),
    "Titans (LMM)": (99.8, 98.4, 98.2, 96.2, 100.0, 99.8, 93.4, 80.2, 90.4, 89.4, 85.8, 80.6),
    "Titans (MAC)": (99.2, 98.8, 99.0, 98.4, 99.6, 98.2, 97.6, 97.4, 98.2, 98.2, 95.6, 95.2),
    "Titans (MAG)": (99.4, 98.0, 97.4, 97.4, 99.2, 98.8, 97.2, 98.6, 98.0, 98.0, 90.2, 88.2),
    "Titans (MAL)": (98.8, 98.6, 98.8, 97.8, 99.8, 98.1, 96.8, 96.4, 98.0, 97.4, 92.0, 90.4),
}

# Figures with only qualitative statements in the text.
TITANS_FIG7 = (
    "Fig. 7: deeper memory (L_M = 1..4) gives lower perplexity at every sequence length (no numbers)"
)
TITANS_FIG8 = "Fig. 8: throughput drops roughly linearly as L_M grows (no numbers)"

__all__ = [
    "MIRAS_TABLE2_760M_HYBRID_WIKI",
    "MIRAS_TABLE2_WIKI",
    "NL_TABLE2_760M_WIKI",
    "NL_TABLE3_SWDE",
    "TITANS_FIG7",
    "TITANS_FIG8",
    "TITANS_TABLE1_340M_WIKI",
    "TITANS_TABLE2_NIAH",
    "TITANS_TABLE2_NIAH_N",
    "TITANS_TABLE5",
]
