"""The certificate report's sentences: informative (>= gray + 5 dB on most crops) and vacuous
(at least half below gray) are two different thresholds, and each is stated for what it is."""

from __future__ import annotations

from smoothrecon.report.certificates import summarize, vacuous_sentence

GRAY = 13.0


def _rows(certified: list[float]) -> list[dict]:
    """One row per crop with the given certified PSNR (attacked 30 dB, clean 31 dB)."""
    return [
        {
            "psnr_certified": c,
            "psnr_attacked": 30.0,
            "psnr_clean": 31.0,
            "psnr_gray": GRAY,
            "vacuous": c < GRAY,
            "abstained": False,
            "certified_le_attacked": True,
        }
        for c in certified
    ]


def test_shares_count_informative_and_vacuous_crops_apart() -> None:
    s = summarize(_rows([20.0, 19.0, 15.0, 10.0]))  # 2 informative, 1 non-vacuous only, 1 vacuous
    assert s["informative"] == 0.5
    assert s["vacuous"] == 0.25
    assert s["held"] == s["checked"] == 4


def test_sentence_names_where_each_threshold_is_crossed() -> None:
    by_eps = {
        0.001: _rows([25.0, 24.0, 23.0, 10.0]),  # 3 of 4 informative
        0.002: _rows([17.0, 16.0, 15.0, 10.0]),  # none informative, 1 of 4 vacuous
        0.005: _rows([14.0, 12.0, 11.0, 10.0]),  # 3 of 4 vacuous
    }
    text = vacuous_sentence("m", 0.25, "median", by_eps)
    assert "informative on most crops up to eps_rel 0.001" in text
    assert "vacuous from eps_rel 0.005" in text


def test_non_vacuous_is_not_called_informative() -> None:
    """Above gray on every crop but never 5 dB above it on most: not informative anywhere."""
    by_eps = {0.001: _rows([16.0, 15.0, 14.0]), 0.01: _rows([15.0, 14.0, 13.5])}
    text = vacuous_sentence("m", 0.5, "pixel", by_eps)
    assert "informative on most crops at no eps_rel measured" in text
    assert "never vacuous up to 0.01" in text


def test_half_informative_is_not_most() -> None:
    text = vacuous_sentence("m", 0.5, "loss", {0.001: _rows([20.0, 20.0, 14.0, 14.0])})
    assert "at no eps_rel measured" in text
