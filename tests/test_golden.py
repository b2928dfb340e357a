"""Golden outputs of what we ship: the default model's greedy captions of the bundled clips, one answer, and the
caption of a 3-minute stereo 44.1 kHz song the tests make, compared as text with tests/golden/mu-llama-mini.json.

Any difference fails. A change that moves them (a retrained model, a dependency upgrade whose effect is understood)
regenerates the file with `MU_LLAMA_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and says why in its commit.
Every output also passes the degeneracy guard (no word repeated many times in a row): transformers 5.24 once made
these captions "A bright bright bright ..." with exit code 0.

Long audio and batching, for the default model as `mu-llama caption` runs it: a batch that mixes the short bundled clips
with long stereo songs (40 s at 48 kHz, 3 min at 44.1 kHz) gives each file what it gets alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import mu_llama
from mu_llama.decoding import DecodingOptions
from mu_llama.model import DEFAULT_MODEL, load_model

GOLDEN = Path(__file__).parent / "golden" / "mu-llama-mini.json"
EXAMPLES = Path(mu_llama.__file__).parent / "assets" / "examples"
QUESTION = "What instruments are playing?"
MAX_RUN = 3  # a word may repeat at most this many times in a row ("very very very" is English; five is a loop)


def longest_repeat(text: str) -> tuple[int, str]:
    """Length of the longest run of one word (case-insensitive, punctuation ignored) and that word."""
    best, word, run, prev = 0, "", 0, None
    for w in re.findall(r"[\w#'-]+", text.lower()):
        run = run + 1 if w == prev else 1
        prev = w
        if run > best:
            best, word = run, w
    return best, word


def assert_fluent(text: str, where: str) -> None:
    run, word = longest_repeat(text)
    assert run <= MAX_RUN, f"{where}: degenerate output, {word!r} {run} times in a row: {text!r}"
    assert len(text.split()) >= 5, f"{where}: degenerate output, too short: {text!r}"


def test_degeneracy_guard_flags_loops():
    assert longest_repeat("A bright bright bright bright medieval medieval piece") == (4, "bright")
    assert longest_repeat("The Ampl Ampl Ampl Ampl Ampl") == (5, "ampl")
    with pytest.raises(AssertionError, match="degenerate"):
        assert_fluent("A bright bright bright bright piece for organ", "x")
    with pytest.raises(AssertionError, match="too short"):
        assert_fluent("A", "x")
    assert_fluent("A slow organ chorale in a calm mood. It is in 4/4 time.", "x")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    """Produced-song stand-ins (drums, bass, chords, lead; stereo): 3 min at 44.1 kHz, 40 s at 48 kHz."""
    from mu_llama.corpus.song import write_song

    d = tmp_path_factory.mktemp("songs")
    return {"song_3min_44k.flac": write_song(d / "song_3min_44k.flac", 180.0, 44100, seed=0),
            "song_40s_48k.wav": write_song(d / "song_40s_48k.wav", 40.0, 48000, seed=1)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def singles(model, songs) -> dict[str, str]:
    """Each file captioned alone through the Python API with the CLI's default decoding."""
    files = {p.name: p for p in sorted(EXAMPLES.iterdir()) if p.suffix in (".flac", ".ogg", ".mp3", ".wav")}
    files.update(songs)
    return {name: mu_llama.caption(model, str(path), DecodingOptions()) for name, path in files.items()}


def current_outputs(model, singles) -> dict:
    answer = mu_llama.ask(model, str(EXAMPLES / "mozart_k458_strings.ogg"), QUESTION, options=DecodingOptions())
    return {"model": DEFAULT_MODEL,
            "captions": {k: v for k, v in singles.items() if k != "song_40s_48k.wav"},
            "answer": {"file": "mozart_k458_strings.ogg", "question": QUESTION, "text": answer}}


def test_golden_outputs_of_the_default_model(model, singles):
    got = current_outputs(model, singles)
    for name, text in got["captions"].items():
        assert_fluent(text, name)
    assert_fluent(got["answer"]["text"], "answer")
    if os.environ.get("MU_LLAMA_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert set(got["captions"]) == set(want["captions"])
    for name in want["captions"]:
        assert got["captions"][name] == want["captions"][name], name
    assert got["answer"] == want["answer"]


def test_mixed_short_and_long_batch_equals_one_file_at_a_time(singles, songs, tmp_path, capsys):
    """`mu-llama caption` at batch size 4 over 3 short clips and 2 long stereo songs: identical to each file alone.
    (The 30.1-s crash lived in the long-audio path only; every bundled clip is shorter.)"""
    from mu_llama.cli.main import main

    short = [EXAMPLES / n for n in ("bach_bwv66.6_organ.ogg", "essen_tanhuser_flute.mp3", "mozart_k545_piano.flac")]
    order = [short[0], songs["song_3min_44k.flac"], short[1], short[2], songs["song_40s_48k.wav"]]
    out = tmp_path / "captions.jsonl"
    assert main(["caption", *map(str, order), "--batch-size", "4", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["path"] for r in rows] == list(map(str, order))
    for r in rows:
        assert r["error"] is None
        assert r["caption"] == singles[Path(r["path"]).name], r["path"]
