"""mu-llama demo page: look at a clip, caption it, ask about it, see its emotion, and generate music from it.

Run: `mu-llama demo` (or `streamlit run demo/app.py`). Settings come from MU_LLAMA_DEMO_* environment variables
(see demo/services.py); `mu-llama demo --model DIR` sets them.

Input paths (the same code serves all three):
  * the file uploader (wav/flac/ogg/mp3); an uploaded file is used while it is present;
  * the example picker (mu_llama/assets/examples), preselected by the query parameter `?example=<file name>`
    (`?example=none`: nothing preselected, so no work starts until the visitor uploads or picks a clip);
  * tests: streamlit.testing.v1.AppTest fills the uploader with `at.file_uploader(key="upload").set_value(
    (name, data, mime))`, the real upload path.
Every section sits in a keyed container (CSS class st-key-<key>: look, caption, ask, feel, generate, model)
so the browser test can find and photograph it.
"""

from __future__ import annotations

import html
import logging
from contextlib import contextmanager

import streamlit as st

from mu_llama.demo import services
from mu_llama.demo.services import DEVICES, QUANTIZE, UPLOAD_TYPES, ModelRequest
from mu_llama.errors import MuLlamaError

log = logging.getLogger("mu_llama.demo")

SUGGESTED = ("What instruments can you hear?", "What is the mood of this music?", "How fast is the tempo?",
             "What genre is this?")
DEFAULT_MAX_NEW_TOKENS = 128  # shorter than the library's 200: a demo on CPU should answer within seconds
DEFAULT_REPETITION_PENALTY = 1.1  # greedy small LLMs loop ("the timpani, the trombone, the timpani, ..."); 1.1 curbs it


@contextmanager
def guarded(what: str):
    """Show a failure as one readable line; the page keeps working. (st.stop / st.rerun are BaseExceptions.)"""
    try:
        yield
    except MuLlamaError as e:
        st.error(f"{what}: {e}")
    except Exception as e:  # never a traceback on the page; the server log keeps it
        log.exception("demo: %s failed", what)
        st.error(f"{what} failed: {type(e).__name__}: {e}")


def quote(text: str) -> str:
    """Model text shown as plain text inside markdown (no stray formatting, no HTML)."""
    return html.escape(text).replace("\n", "  \n") if text else "_(empty)_"


def quote_block(text: str) -> str:
    """Model text as one markdown block quote, however many paragraphs it has."""
    return "\n".join(f"> {line}" for line in quote(text).split("\n"))


def optional(fn, *args):
    """fn(*args), or None when that estimator is unavailable (the Feel section already says why)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        log.debug("demo: optional %s unavailable: %s", getattr(fn, "__name__", fn), reason(e))
        return None


def reason(e: BaseException) -> str:
    return str(e) if isinstance(e, MuLlamaError) else f"{type(e).__name__}: {e}"


# --- sidebar: model panel --------------------------------------------------------------------------
def _apply_model_form() -> None:
    ss = st.session_state
    req = ModelRequest(ss.model_custom.strip() or ss.model_name, ss.model_quant, ss.model_device)
    ss.model_request, ss.model_auto = req, False
    ss.model_failed.pop(req.key, None)  # pressing "Load model" retries a model that failed before


def get_model() -> tuple[services.LoadedModel | None, str | None]:
    """The requested model, loaded once per process; a failure is remembered per request until Load is pressed."""
    from mu_llama.model import DEFAULT_MODEL, MODELS

    ss = st.session_state
    req = ss.model_request
    if req.key in ss.model_failed:
        return None, ss.model_failed[req.key]
    try:
        with st.spinner(f"Loading model {req.spec} ({req.quantize}, {req.device}) ..."):
            return services.load_model(req.spec, req.quantize, req.device), None
    except Exception as e:  # shown as one line in the sidebar
        if not isinstance(e, MuLlamaError):
            log.exception("demo: loading %s failed", req.spec)
        if ss.model_auto and req.spec == DEFAULT_MODEL:  # the packaged default is optional: fall back, say so
            fallback = services.FALLBACK_MODEL
            ss.model_notice = (f"The default model {DEFAULT_MODEL!r} is not available ({reason(e)}). "
                               f"Using {fallback!r}.")
            ss.model_request, ss.model_auto = ModelRequest(fallback, req.quantize, req.device), False
            if fallback in MODELS:  # show it in the form (widgets not drawn yet in this run)
                ss.model_name = fallback
            else:
                ss.model_custom = fallback
            return get_model()
        ss.model_failed[req.key] = reason(e)
        return None, reason(e)


def model_panel(settings: services.Settings) -> tuple[services.LoadedModel | None, tuple]:
    from mu_llama.model import DEFAULT_MODEL, MODELS

    ss = st.session_state
    names = list(MODELS)
    if "model_request" not in ss:
        start = settings.model or DEFAULT_MODEL
        ss.model_request, ss.model_auto, ss.model_failed = ModelRequest(start), settings.model is None, {}
        ss.model_name = start if start in names else names[0]
        ss.model_custom = "" if start in names else start
        ss.model_quant, ss.model_device = "none", "cpu"
    with st.sidebar:
        st.header("Model")
        loaded, error = get_model()
        with st.container(key="model"):
            if ss.get("model_notice"):
                st.info(ss.model_notice)
            if error:
                st.error(f"Model not loaded: {error}")
            with st.form("model_form"):
                st.selectbox("Model", names, key="model_name", help="\n".join(f"- **{n}**: {e.description}"
                                                                             for n, e in MODELS.items()))
                st.text_input("...or a local directory / hub id", key="model_custom",
                              help="A directory written by MuLlama.save_pretrained; overrides the name above.")
                st.selectbox("Quantization", list(QUANTIZE), key="model_quant",
                             help="int8 = torch dynamic int8 (CPU); 8bit / 4bit = bitsandbytes")
                st.selectbox("Device", DEVICES, key="model_device")
                st.form_submit_button("Load model", on_click=_apply_model_form, key="model_load")
        st.header("Decoding")
        max_new = st.slider("Max new tokens", 16, 512, DEFAULT_MAX_NEW_TOKENS, 16, key="max_new_tokens")
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.0, 0.05, key="temperature")
        penalty = st.slider("Repetition penalty (1 = off)", 1.0, 1.5, DEFAULT_REPETITION_PENALTY, 0.05,
                            key="repetition_penalty")
        st.header("Status")
        with st.container(key="status"):
            if loaded is not None:
                m = loaded.model
                st.markdown(f"**{loaded.request.spec}** on `{m.device}` (quantization: {loaded.request.quantize})")
                if loaded.request.spec.startswith("untrained:"):
                    st.caption("Untrained adapter: its gates are zero, so answers come from the plain LLM and "
                               "do not depend on the audio.")
            for name, value in services.memory_status().items():
                st.markdown(f"{name}: {value}")
    return loaded, (max_new, temperature, penalty)


# --- main sections ------------------------------------------------------------------------------------
def choose_clip(settings: services.Settings) -> services.DemoClip | None:
    ex = services.examples()
    names = list(ex)
    wanted = st.query_params.get("example")
    left, right = st.columns(2)
    with left:
        index = None if wanted == "none" else names.index(wanted) if wanted in names else 0
        example = st.selectbox("Example clip", names, index=index, format_func=lambda f: ex.get(f, f),
                               placeholder="Choose an example", key="example") if names else None
    with right:
        upload = st.file_uploader(
            f"...or upload your own ({', '.join(UPLOAD_TYPES)}; up to {settings.max_upload_mb} MB and "
            f"{settings.max_seconds:g} s)", type=list(UPLOAD_TYPES), max_upload_size=settings.max_upload_mb,
            key="upload")
    if upload is None and example is None:
        return None
    name = upload.name if upload is not None else example
    try:
        data = upload.getvalue() if upload is not None else services.example_bytes(example)
        return services.read_clip(name, data, settings)
    except MuLlamaError as e:
        st.error(f"Cannot use this file: {e}")
        if upload is not None:
            st.caption("Remove the upload (x) to go back to the examples, or upload another file.")
        return None


def look_section(clip: services.DemoClip) -> None:
    st.subheader("Look")
    st.audio(clip.data, format=clip.mime)
    a, b, c = st.columns(3)
    a.metric("Duration", f"{clip.duration:.1f} s")
    b.metric("Sample rate", f"{clip.sample_rate / 1000:g} kHz")
    c.metric("Channels / format", f"{clip.channels} / {clip.format}")
    with guarded("Plot"):
        st.image(services.waveform_png(clip.key, clip.name, clip.wave),
                 caption="waveform and log-mel spectrogram (80 bands)")


def caption_section(clip: services.DemoClip, loaded, decoding: tuple) -> str | None:
    st.subheader("Caption")
    if loaded is None:
        st.info("Not available: no model is loaded (see the sidebar).")
        return None
    text = None
    with guarded("Caption"), st.spinner(f"Captioning with {loaded.request.spec} ..."):
        text, seconds = services.caption(clip.key, loaded.request.key, decoding, loaded, clip.wave)
    if text is not None:
        st.markdown(quote_block(text))
        st.caption(f"{clip.name} · {loaded.request.spec}, {decoding[0]} new tokens max, temperature "
                   f"{decoding[1]:g}, repetition penalty {decoding[2]:g}; computed in {seconds:.1f} s "
                   "(remembered for this clip, model and settings)")
    return text


def ask_section(clip: services.DemoClip, loaded, decoding: tuple) -> None:
    st.subheader("Ask")
    if loaded is None:
        st.info("Not available: no model is loaded (see the sidebar).")
        return
    history = st.session_state.setdefault("chats", {}).setdefault(clip.key, [])  # per clip, kept while browsing
    messages = st.container()
    with messages:
        for q, a in history:
            st.chat_message("user").markdown(quote(q))
            st.chat_message("assistant").markdown(quote(a))
    clicked = None
    cols = st.columns(2)
    for i, q in enumerate(SUGGESTED):
        if cols[i % 2].button(q, key=f"suggest_{i}", width="stretch"):
            clicked = q
    typed = st.chat_input("Ask about this clip", key=f"chat_{clip.key}")
    question = (typed or "").strip() or clicked
    if question:
        with messages:
            st.chat_message("user").markdown(quote(question))
            with st.chat_message("assistant"), guarded("Answer"), st.spinner("Listening and thinking ..."):
                answer = services.answer(loaded, clip.wave, question, history, decoding)
                st.markdown(quote(answer))
                history.append((question, answer))
    if history and st.button("Clear conversation", key="clear_chat"):
        history.clear()
        st.rerun()


def feel_section(clip: services.DemoClip, caption: str | None) -> dict:
    st.subheader("Feel")
    points, missing = {}, []
    try:
        points["audio"] = services.audio_vad(clip.key, clip.wave)
    except Exception as e:  # noqa: BLE001 - optional estimator: say why it is missing
        missing.append(f"audio estimate not available: {reason(e)}")
    if caption:
        try:
            points["caption text"] = services.text_vad(caption)
        except Exception as e:  # noqa: BLE001
            missing.append(f"text estimate not available: {reason(e)}")
    if points:
        with guarded("Plot"):
            st.image(services.va_png(services.va_points(points), "Valence-arousal plane"), width=380)
        st.markdown("  \n".join(f"**{k}**: {v}" for k, v in points.items()))
    for m in missing:
        st.warning(m)
    st.caption("Derived valence-arousal-dominance estimates (lexicons and musical cue rules, not listener ratings); "
               "marker size = dominance.")
    return points


def generate_section(clip: services.DemoClip, caption: str | None, feel: dict, loaded, decoding: tuple,
                     settings: services.Settings) -> None:
    from mu_llama.emotion import VAD

    st.subheader("Generate")
    try:
        services.load_generator(settings.generator)
    except Exception as e:  # noqa: BLE001
        st.warning(f"Not available: {reason(e)}")
        return
    start = feel.get("audio") or feel.get("caption text") or VAD.neutral()
    k = clip.key
    text = st.text_area("Description (starts as the caption)", value=caption or "", key=f"gen_text_{k}", height=110)
    cols = st.columns(3)
    vad = [col.slider(axis.capitalize(), -1.0, 1.0, round(getattr(start, axis), 2), 0.05, key=f"gen_{axis}_{k}")
           for col, axis in zip(cols, ("valence", "arousal", "dominance"))]
    left, right = st.columns(2)
    duration = left.slider("Duration (s)", 2, 30, 10, key="gen_duration")
    seed = right.number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
    done = st.session_state.setdefault("generated", {})
    if st.button("Generate", type="primary", key="gen_button"):
        with guarded("Generate"), st.spinner("Composing and rendering ..."):
            done[k] = services.generate(settings.generator, text, VAD(*vad, source="user"), float(duration), int(seed))
    res = done.get(k)
    if res is None:
        return
    st.audio(res.wav, format="audio/wav")
    a, b = st.columns(2)
    a.download_button("Download WAV", res.wav, f"mu-llama-{k}-{res.seed}.wav", "audio/wav", key="dl_wav")
    b.download_button("Download MIDI", res.midi, f"mu-llama-{k}-{res.seed}.mid", "audio/midi", key="dl_midi")
    st.markdown("**Closing the loop**: the result, captioned and placed on the valence-arousal plane.")
    points = {"requested": res.vad}
    if loaded is not None:
        recap = None
        with guarded("Re-caption"), st.spinner("Captioning the result ..."):
            recap, _ = services.caption(res.key, loaded.request.key, decoding, loaded, res.wave)
        if recap is not None:
            with st.container(key="recaption"):
                st.markdown(quote_block(recap))
            points["result caption"] = optional(services.text_vad, recap)
    points["result audio"] = optional(services.audio_vad, res.key, res.wave)
    points = {k: v for k, v in points.items() if v is not None}
    with guarded("Plot"):
        st.image(services.va_png(services.va_points(points), "Requested vs. heard"), width=380)


def page() -> None:
    try:
        settings = services.Settings.from_env()
    except MuLlamaError as e:
        st.error(f"Demo settings: {e}")
        return
    st.title("mu-llama: listen, describe, ask, feel, generate")
    clip = choose_clip(settings)  # before the model panel: the page is usable while a model loads
    loaded, decoding = model_panel(settings)
    if clip is None:
        st.info("Choose an example clip or upload one.")
        return
    left, right = st.columns([3, 2], gap="large")
    with left, st.container(key="look"):
        look_section(clip)
    with right:
        with st.container(key="caption"):
            caption = caption_section(clip, loaded, decoding)
        with st.container(key="feel"):
            feel = feel_section(clip, caption)
    left, right = st.columns(2, gap="large")
    with left, st.container(key="ask"):
        ask_section(clip, loaded, decoding)
    with right, st.container(key="generate"):
        generate_section(clip, caption, feel, loaded, decoding, settings)


def main() -> None:
    st.set_page_config(page_title="mu-llama demo", page_icon=":musical_note:", layout="wide")
    page()
    # Run marker for browser tests: an invisible element (class st-key-run_done_<n>) written when run n completes.
    runs = st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    with st.sidebar, st.container(key=f"run_done_{runs}"):
        st.html("<span></span>")


if __name__ == "__main__":  # streamlit runs the script as __main__; importing it (docs, tests) draws nothing
    main()
