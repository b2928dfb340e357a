"""The Streamlit demo under streamlit.testing.v1.AppTest (every flow, no browser), its CLI verb and mu_llama.plots.

The app runs with a tiny random MuLlama and a tiny random generator saved in a temp dir (MU_LLAMA_DEMO_MODEL /
MU_LLAMA_DEMO_GENERATOR), and a hashing text embedder in place of MiniLM, so the file needs no downloads and
little CPU. Invariants: what the page shows equals what the library returns for the same input (caption, a
two-turn conversation, the re-caption of generated music); the same seed gives the same WAV; bad input shows one
readable error and the page keeps working.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("matplotlib")

import mu_llama.demo
from streamlit.testing.v1 import AppTest

from mu_llama import plots

APP = str(Path(mu_llama.demo.__file__).with_name("app.py"))
EXAMPLES = Path(mu_llama.__file__).parent / "assets" / "examples"
TIMEOUT = 120


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """(model directory, loaded model, generator directory), built once for the module."""
    import torch

    from mu_llama.generate import GeneratorConfig, MusicTokenLM, save_generator
    from mu_llama.model import MuLlama, MuLlamaConfig, load_model

    tmp = tmp_path_factory.mktemp("demo_parts")
    model_dir = MuLlama.build(MuLlamaConfig(encoder="random:tiny", llm="random:tiny-llama",
                                            injection_layers=2)).save_pretrained(tmp / "model")
    torch.manual_seed(0)
    gen_dir = save_generator(MusicTokenLM(GeneratorConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=256)),
                             tmp / "generator")
    return str(model_dir), load_model(model_dir), str(gen_dir)


@pytest.fixture
def app(parts, monkeypatch):
    """A fresh AppTest of demo/app.py wired to the tiny parts (not yet run)."""
    from mu_llama.generate import conditioning

    model_dir, _, gen_dir = parts
    monkeypatch.setenv("MU_LLAMA_DEMO_MODEL", model_dir)
    monkeypatch.setenv("MU_LLAMA_DEMO_GENERATOR", gen_dir)
    monkeypatch.setattr(conditioning, "default_text_embedder", lambda: conditioning.HashTextEmbedder())
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def wav_bytes(seconds: float = 3.0, sr: int = 32000, channels: int = 2) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t % 0.5 * 4)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone] * channels, axis=1), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decoded(data: bytes, name: str = "clip.wav") -> np.ndarray:
    from mu_llama.audio import decode_bytes

    return decode_bytes(data, 24000, name)


def ok(at: AppTest) -> AppTest:
    """The run raised nothing to the page and showed no error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def quotes(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("> ")]


def shown_caption(at: AppTest) -> str:
    assert quotes(at), "no caption on the page"
    return quotes(at)[0]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


DECODING = {"max_new_tokens": 128, "repetition_penalty": 1.1}  # the page's defaults


def library_caption(model, wave: np.ndarray) -> str:
    """The library's caption, formatted as the page shows it (a block quote)."""
    from mu_llama.demo.app import quote_block

    from mu_llama.decoding import DecodingOptions
    from mu_llama.tasks import caption

    return quote_block(caption(model, (wave, 24000), DecodingOptions(**DECODING)))


def upload(at: AppTest, name: str, data: bytes, mime: str = "audio/wav") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime))
    return at.run()


# --- flows ------------------------------------------------------------------------------------------------
def test_example_from_query_param_is_looked_at_and_captioned(app, parts):
    from mu_llama.audio import load_audio, probe

    _, model, _ = parts
    app.query_params["example"] = "mozart_k545_piano.flac"
    ok(app.run())
    assert app.selectbox(key="example").value == "mozart_k545_piano.flac"
    path = EXAMPLES / "mozart_k545_piano.flac"
    info = probe(path)
    m = metrics(app)
    assert m["Duration"] == f"{info.duration:.1f} s"
    assert m["Sample rate"] == f"{info.sample_rate / 1000:g} kHz"
    assert shown_caption(app) == library_caption(model, load_audio(path, 24000))
    assert app.image, "no waveform / mel figure"


def test_query_param_none_waits_for_a_clip(app, parts):
    app.query_params["example"] = "none"
    ok(app.run())
    assert app.selectbox(key="example").value is None and not quotes(app) and not app.metric
    assert "Choose an example clip or upload one." in [i.value for i in app.info]
    data = wav_bytes(2.0, 24000, 1)
    ok(upload(app, "first.wav", data))
    assert shown_caption(app) == library_caption(parts[1], decoded(data))


def test_upload_caption_ask_two_turns_and_generate(app, parts, tmp_path):
    from mu_llama.decoding import DecodingOptions
    from mu_llama.tasks import ask

    _, model, _ = parts
    data = wav_bytes(3.0, 32000, 2)
    ok(app.run())
    ok(upload(app, "tone.wav", data))
    assert metrics(app)["Duration"] == "3.0 s" and metrics(app)["Sample rate"] == "32 kHz"
    assert metrics(app)["Channels / format"] == "2 / wav"
    wave = decoded(data)
    assert shown_caption(app) == library_caption(model, wave)

    # two turns: typed, then a suggested-question button; the page's conversation equals the library's
    ok(app.chat_input[0].set_value("Is this a piano?").run())
    suggested = app.button(key="suggest_1").label
    ok(app.button(key="suggest_1").click().run())
    key = mu_llama.demo.services.content_key(data)
    history = app.session_state["chats"][key]
    assert [q for q, _ in history] == ["Is this a piano?", suggested]
    options = DecodingOptions(**DECODING)
    first = ask(model, (wave, 24000), "Is this a piano?", options=options)
    second = ask(model, (wave, 24000), suggested, history=[[("Is this a piano?", first)]], options=options)
    assert [a for _, a in history] == [first, second]
    assert len(app.chat_message) == 4

    # generate from the (edited) caption and VAD sliders; the result is played, offered and re-captioned
    app.text_area(key=f"gen_text_{key}").set_value("a calm piano piece")
    app.slider(key=f"gen_valence_{key}").set_value(0.5)
    app.slider(key=f"gen_arousal_{key}").set_value(-0.5)
    app.slider(key="gen_duration").set_value(3)
    ok(app.button(key="gen_button").click().run())
    res = app.session_state["generated"][key]
    assert (res.text, res.vad.valence, res.vad.arousal, res.duration) == ("a calm piano piece", 0.5, -0.5, 3.0)
    assert len(decoded(res.wav)) == 3 * 24000  # rendered to exactly the requested duration
    import mido

    assert mido.MidiFile(file=io.BytesIO(res.midi)).length > 0
    assert {b.label for b in app.get("download_button")} == {"Download WAV", "Download MIDI"}
    assert quotes(app)[-1] == library_caption(model, res.wave)  # the loop closed on screen

    # the page's music is the library's music for the same text, VAD, duration and seed
    from mu_llama.generate import (
        Conditioning,
        EmbeddedGenerator,
        HashTextEmbedder,
        SamplingOptions,
    )

    lib = EmbeddedGenerator.load(parts[2], HashTextEmbedder()).generate(
        Conditioning("a calm piano piece", res.vad), duration=3.0, options=SamplingOptions(seed=0))
    wav, mid = lib.save(tmp_path / "lib.wav")
    assert wav.read_bytes() == res.wav and mid.read_bytes() == res.midi


def test_bad_upload_shows_error_and_app_stays_usable(app, parts):
    _, model, _ = parts
    ok(app.run())
    upload(app, "notes.wav", b"these are not audio bytes at all")
    assert not app.exception
    assert len(app.error) == 1 and "notes.wav: not audio" in app.error[0].value
    assert not app.chat_input and "gen_button" not in [b.key for b in app.button]
    data = wav_bytes(2.0, 24000, 1)  # a good upload replaces it and every section works again
    ok(upload(app, "good.wav", data))
    assert shown_caption(app) == library_caption(model, decoded(data))
    app.file_uploader(key="upload").set_value(None)  # removing the upload returns to the example
    ok(app.run())
    assert metrics(app)["Duration"] != "2.0 s"


@pytest.mark.parametrize("env, name, seconds, expect", [
    ({"MU_LLAMA_DEMO_MAX_UPLOAD_MB": "1"}, "big.wav", 20.0, "big.wav: too long (1.8 MB is over the demo's 1 MB upload limit)"),
    ({"MU_LLAMA_DEMO_MAX_SECONDS": "2"}, "long.wav", 3.0, "long.wav: too long (3.0 s exceeds"),
])
def test_upload_limits(app, monkeypatch, env, name, seconds, expect):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    app.run()
    upload(app, name, wav_bytes(seconds, 48000, 1))
    assert not app.exception
    assert len(app.error) == 1 and expect in app.error[0].value, app.error[0].value
    assert not app.chat_input  # nothing downstream runs on a rejected clip


def test_model_load_failure_is_one_line_and_recoverable(app, parts, tmp_path):
    model_dir, model, _ = parts
    ok(app.run())
    app.text_input(key="model_custom").set_value(str(tmp_path / "no-such-model"))
    app.button(key="model_load").click().run()
    assert not app.exception
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and "Model not loaded:" in errors[0] and "\n" not in errors[0]
    assert "Not available: no model is loaded" in next(i.value for i in app.info)
    assert metrics(app)["Duration"].endswith(" s")  # the Look section still works
    app.text_input(key="model_custom").set_value(model_dir)
    ok(app.button(key="model_load").click().run())
    example = app.selectbox(key="example").value
    assert shown_caption(app) == library_caption(model, decoded((EXAMPLES / example).read_bytes(), example))


def test_quantization_and_device_choices(app, parts):
    import torch

    from mu_llama.llm import LLMOptions
    from mu_llama.model import load_model

    model_dir, _, _ = parts
    ok(app.run())
    app.selectbox(key="model_quant").set_value("int8")
    ok(app.button(key="model_load").click().run())
    status = " ".join(m.value for m in app.sidebar.markdown)
    assert "quantization: int8" in status and "RSS:" in status
    int8 = load_model(model_dir, LLMOptions(quantize="int8-dynamic"))
    example = app.selectbox(key="example").value
    assert shown_caption(app) == library_caption(int8, decoded((EXAMPLES / example).read_bytes(), example))
    if not torch.cuda.is_available():
        app.selectbox(key="model_quant").set_value("none")
        app.selectbox(key="model_device").set_value("cuda")
        app.button(key="model_load").click().run()
        assert not app.exception
        assert "CUDA is not available" in app.sidebar.error[0].value


def test_missing_default_model_falls_back_with_a_notice(app, parts, monkeypatch):
    from mu_llama.demo import services

    import mu_llama.model

    model_dir, _, _ = parts
    monkeypatch.delenv("MU_LLAMA_DEMO_MODEL")
    monkeypatch.setattr(mu_llama.model, "DEFAULT_MODEL", "not-installed-model")
    monkeypatch.setattr(services, "FALLBACK_MODEL", model_dir)  # the real fallback is untrained:smollm2
    ok(app.run())
    notice = [i.value for i in app.sidebar.info]
    assert notice and "'not-installed-model' is not available" in notice[0] and model_dir in notice[0]
    assert shown_caption(app)


def test_feel_shows_text_vad_of_the_caption(app, parts):
    from mu_llama.audio import load_audio
    from mu_llama.decoding import DecodingOptions
    from mu_llama.emotion import vad_from_text
    from mu_llama.tasks import caption as run_caption

    ok(app.run())
    example = EXAMPLES / app.selectbox(key="example").value
    caption = run_caption(parts[1], (load_audio(example, 24000), 24000), DecodingOptions(**DECODING))
    assert shown_caption(app) == library_caption(parts[1], load_audio(example, 24000))
    rows = [line.strip() for m in app.markdown for line in m.value.split("\n") if line.startswith("**")]
    assert f"**caption text**: {vad_from_text(caption)}" in rows
    # the audio estimate equals the library's on the same decoded clip, or the page says why it is missing
    from mu_llama.audio import decode_array
    from mu_llama.emotion.audio import SR, vad_from_wave
    from mu_llama.errors import MuLlamaError

    try:
        expected = vad_from_wave(decode_array(decoded(example.read_bytes(), example.name), 24000, SR), SR)
    except MuLlamaError as e:
        assert any(f"audio estimate not available: {e}" == w.value for w in app.warning)
    else:
        assert f"**audio**: {expected}" in rows


# --- CLI verb -------------------------------------------------------------------------------------------
def test_cli_demo_runs_the_installed_app_headless():
    from mu_llama.cli.demo import demo_env, streamlit_command
    from mu_llama.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--port", "9123", "--address", "0.0.0.0", "--model", "/m",
                                      "--max-upload-mb", "7"])
    cmd = streamlit_command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == Path(APP) and Path(cmd[4]).is_file()
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--server.headless"] == "true" and flags["--server.port"] == "9123"
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.maxUploadSize"] == "7"
    env = demo_env(args)
    assert env["MU_LLAMA_DEMO_MODEL"] == "/m" and env["MU_LLAMA_DEMO_MAX_UPLOAD_MB"] == "7"


# --- plots ----------------------------------------------------------------------------------------------
def test_mel_spectrogram_puts_a_tone_in_its_band():
    sr, f0 = 24000, 1000.0
    t = np.arange(sr) / sr
    db, times, centres = plots.mel_spectrogram_db(np.sin(2 * np.pi * f0 * t).astype(np.float32), sr)
    assert db.shape == (80, len(times)) and db.max() == 0.0 and db.min() >= -80.0
    peak_band = int(np.argmax(db[:, len(times) // 2]))
    assert peak_band == int(np.argmin(np.abs(centres - f0)))
    # Slaney-normalised filters: white noise gives every band about the same mean level
    noise = np.random.default_rng(0).standard_normal(sr * 4).astype(np.float32)
    level = plots.mel_spectrogram_db(noise, sr)[0][10:].mean(axis=1)
    assert level.max() - level.min() < 3.0


def test_envelope_keeps_extremes_and_figures_render():
    x = np.random.default_rng(1).standard_normal(123457).astype(np.float32)
    lo, hi = plots.envelope(x, 1000)
    assert len(lo) == len(hi) == 1000 and lo.min() == x.min() and hi.max() == x.max()
    png = plots.figure_png(plots.waveform_figure(x * 0.1, 24000, title="noise"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plots.va_plane_figure([("a", 0.5, -0.25, 1.0), ("b", -1.0, 1.0)])
    ax = fig.axes[0]
    assert [tuple(c.get_offsets()[0]) for c in ax.collections if len(c.get_offsets())] == [(0.5, -0.25), (-1.0, 1.0)]
    with pytest.raises(mu_llama.errors.ConfigError):
        plots.va_plane_figure([("out", 1.5, 0.0)])
