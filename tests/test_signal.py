"""mu_llama.signal, the one signal-processing module: framing and filterbank invariants, agreement with librosa where
both compute the same thing, and its outputs and its callers' features pinned on the bundled clips.

librosa (the `dev` extra) is the reference. Tolerances, all measured well inside (numbers from librosa 0.11):
  mel filterbank     HTK scale, peak 1: identical; Slaney normalisation or scale: 1e-6 of the peak (float32 rounding);
                     built in torch float32 (xp=torch, the descriptors): 1e-5 absolute (measured 5e-6)
  STFT magnitude     1e-6 of the largest magnitude, both windows (measured 1.2e-7; torch.stft the same)
  MFCC (DCT-II)      1e-6 of the largest coefficient (measured 2.5e-7)
  onset envelope     librosa.onset.onset_strength(lag=1, max_size=1, center=False, detrend=False): 1e-6 (identical)
  autocorrelation    librosa.autocorrelate: 1e-6 of lag 0 (measured 1e-7)
  lag tempi, mel frequencies, bin pitches: identical
librosa.filters.chroma spreads each bin over pitch classes with Gaussian weights; ours (the descriptors') maps a bin
to the class of its nearest MIDI pitch, so only that mapping is compared (librosa.hz_to_midi, rounded).

The pins (tests/fixtures/signal_pins.json) hold summary values of each signal function on the four bundled clips and
the features the trained estimators and the shipped model read (emotion audio features, tagger timbre features,
descriptor means, the encoder recipe's log-mel, the plot spectrogram, musicnn's input), compared at rtol 1e-5.
A change that moves them on purpose regenerates the file with
`MU_LLAMA_UPDATE_SIGNAL_PINS=1 python -m pytest tests/test_signal.py` and says why in its commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mu_llama
from mu_llama import signal
from mu_llama.errors import ConfigError

EXAMPLES = Path(mu_llama.__file__).parent / "assets" / "examples"
PINS = Path(__file__).parent / "fixtures" / "signal_pins.json"
SR, N_FFT, HOP = 22050, 2048, 512


def tone(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr).astype(np.float32)


def clicks(bpm: float, seconds: float = 8.0, sr: int = SR) -> np.ndarray:
    x = np.zeros(int(seconds * sr), np.float32)
    x[((0.25 + np.arange(0, seconds - 0.25, 60.0 / bpm)) * sr).astype(int)] = 1.0        # the first off the edge
    return x


def peak_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------------------ invariants


def test_centred_frames_sit_on_their_sample_and_pad_with_zeros():
    x = np.arange(1, 1001, dtype=np.float32)
    fr = signal.frame(x, 256, 100)
    assert fr.shape == (signal.frame_count(1000, 256, 100), 256) == (11, 256)
    for t in range(len(fr)):
        assert fr[t, 128] == x[t * 100] if t * 100 < len(x) else fr[t, 128] == 0
    assert np.all(fr[0, :128] == 0) and np.all(fr[-1, 128:] == 0)
    # any start / count, frames wholly outside the signal included: zeros there, the signal where it is
    fr = signal.frame(x, 8, 5, start=-20, count=300)
    for t in (0, 3, 4, 150, 299):
        idx = -20 + 5 * t + np.arange(8)
        want = np.where((idx >= 0) & (idx < 1000), x[np.clip(idx, 0, 999)], 0)
        assert np.array_equal(fr[t], want), t
    assert signal.frame(x, 8, 5, count=0).shape == (0, 8)


def test_torch_spectrogram_equals_numpy_and_a_batch_row_equals_its_clip():
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(n).astype(np.float32) for n in (9000, 6000))
    batch = torch.zeros(2, 9000)
    batch[0], batch[1, :6000] = torch.from_numpy(a), torch.from_numpy(b)
    kw = dict(window="hann_periodic", start=-700, count=20)
    got = signal.spectrogram(batch, 1024, 320, **kw)                               # (2, 513, 20)
    assert got.shape == (2, 513, 20)
    assert peak_rel(got[1].numpy(), signal.spectrogram(np.pad(b, (0, 3000)), 1024, 320, **kw)) < 1e-6
    assert peak_rel(got[0].numpy(), signal.spectrogram(a, 1024, 320, **kw)) < 1e-6
    assert torch.equal(signal.spectrogram(batch[:1], 1024, 320, power=2, **kw)[0], got[0].pow(2))


def test_a_tone_lands_in_its_bin_band_and_pitch_class():
    S = signal.spectrogram(tone(440.0), N_FFT, HOP)
    f = signal.fft_frequencies(SR, N_FFT)
    assert abs(f[S[:, 10].argmax()] - 440.0) < SR / N_FFT
    mel = signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0) @ S ** 2
    centres = signal.mel_frequencies(66, 30.0, 11000.0)[1:-1]
    assert abs(np.log2(centres[mel[:, 10].argmax()] / 440.0)) < 0.1
    chroma = signal.chroma_filterbank(SR, N_FFT) @ S ** 2
    assert chroma[:, 10].argmax() == 9                                              # A
    cm = signal.chroma_filterbank(SR, N_FFT)
    inside = (f >= 55.0) & (f <= 4186.0)
    assert np.array_equal(cm.sum(0), inside.astype(np.float32))                     # one class per bin in range


def test_onsets_and_tempo_profile_of_a_click_track():
    S = signal.spectrogram(clicks(120.0), N_FFT, HOP)
    env = signal.onset_envelope(np.log1p(100 * S))
    fps = SR / HOP
    found = np.flatnonzero(signal.onset_peaks(env / env.std(), 0.5)) / fps
    assert len(found) == 16 and np.allclose(np.diff(found), 0.5, atol=1.5 / fps)
    ac = signal.autocorrelation(env - env.mean())
    edges = np.geomspace(30.0, 480.0, 25)
    prof = signal.tempo_profile(ac / ac[0], fps, edges)
    best = prof.argmax()
    assert edges[best] <= 120.0 < edges[best + 1] or edges[best] <= 60.0 < edges[best + 1]   # the beat or its half
    assert signal.lag_bpm(4, fps)[2] == pytest.approx(60 * fps / 2)


def test_constant_matrices_are_cached_read_only_and_torch_agrees():
    fb = signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0)
    assert fb is signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0) and not fb.flags.writeable
    assert fb.dtype == np.float32 and fb.shape == (64, N_FFT // 2 + 1) and fb.max() <= 1.0
    for np_m, torch_m in [(fb, signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0, xp=torch)),
                          (signal.dct_matrix(64, 20), signal.dct_matrix(64, 20, xp=torch)),
                          (signal.chroma_filterbank(24000, N_FFT), signal.chroma_filterbank(24000, N_FFT, xp=torch))]:
        assert torch_m.dtype == torch.float32
        np.testing.assert_allclose(torch_m.numpy(), np_m, atol=1e-5)
    d = signal.dct_matrix(64, 20)
    np.testing.assert_allclose(d @ d.T, np.eye(20), atol=1e-6)                     # orthonormal rows


def test_bad_choices_raise_and_name_the_valid_ones():
    with pytest.raises(ConfigError, match="hann_periodic"):
        signal.spectrogram(tone(440.0), 256, 64, window="hamming")
    with pytest.raises(ConfigError, match="'htk', 'slaney'"):
        signal.mel_filterbank(SR, 512, 40, scale="bark")
    with pytest.raises(ConfigError, match="slaney"):
        signal.mel_filterbank(SR, 512, 40, norm="area")
    with pytest.raises(ConfigError, match="fmin < fmax"):
        signal.mel_filterbank(SR, 512, 40, 30.0, 12000.0)
    with pytest.raises(ConfigError, match="numpy only"):
        signal.mel_filterbank(SR, 512, 40, scale="slaney", xp=torch)


# ------------------------------------------------------------------------------------------------ librosa


@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def piano() -> np.ndarray:
    from mu_llama.audio import load_audio

    return load_audio(EXAMPLES / "mozart_k545_piano.flac", SR)


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax, ours, theirs, tol", [
    (22050, 2048, 64, 30.0, 11000.0, {}, {"htk": True, "norm": None}, 0.0),           # tagger
    (24000, 1024, 64, 30.0, 11000.0, {}, {"htk": True, "norm": None}, 0.0),           # encoder targets
    (22050, 1024, 80, 30.0, None, {}, {"htk": True, "norm": None}, 0.0),              # corpus report
    (22050, 2048, 80, 0.0, None, {"norm": "slaney"}, {"htk": True, "norm": "slaney"}, 1e-6),   # plots
    (16000, 512, 96, 0.0, None, {"scale": "slaney", "norm": "slaney"}, {}, 1e-6),     # musicnn: librosa's default
    (24000, 2048, 64, 30.0, 11000.0, {"xp": torch}, {"htk": True, "norm": None}, 1e-5),  # descriptors, float32
])
def test_mel_filterbank_matches_librosa(librosa, sr, n_fft, n_mels, fmin, fmax, ours, theirs, tol):
    got = signal.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, **ours)
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, **theirs)
    assert peak_rel(got, want) <= tol
    scale = ours.get("scale", "htk")
    np.testing.assert_array_equal(signal.mel_frequencies(n_mels + 2, fmin, fmax or sr / 2, scale=scale),
                                  librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax or sr / 2, htk=scale == "htk"))


@pytest.mark.parametrize("window", ["hann", "hann_periodic"])
def test_stft_magnitude_matches_librosa(librosa, piano, window):
    got = signal.spectrogram(piano, N_FFT, HOP, window=window)
    ref_window = np.hanning(N_FFT) if window == "hann" else "hann"                  # librosa's "hann" is periodic
    want = np.abs(librosa.stft(piano, n_fft=N_FFT, hop_length=HOP, window=ref_window, center=True,
                               pad_mode="constant"))
    assert peak_rel(got, want) < 1e-6
    assert peak_rel(signal.spectrogram(torch.from_numpy(piano), N_FFT, HOP, window=window).numpy(), want) < 1e-6
    if window == "hann_periodic":
        import scipy.signal

        np.testing.assert_allclose(signal.get_window(window, N_FFT), scipy.signal.get_window("hann", N_FFT), atol=1e-7)


def test_mfcc_onsets_and_tempo_match_librosa(librosa, piano):
    logmel = np.log(signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0) @ signal.spectrogram(piano, N_FFT, HOP,
                                                                                              power=2) + 1e-8)
    want = librosa.feature.mfcc(S=logmel, n_mfcc=20)                                # DCT-II, orthonormal
    assert peak_rel(signal.mfcc(logmel, 20), want) < 1e-6
    assert peak_rel(signal.mfcc(torch.from_numpy(logmel), 20).numpy(), want) < 1e-6
    for mean, aggregate in ((False, np.sum), (True, np.mean)):
        want = librosa.onset.onset_strength(S=logmel, lag=1, max_size=1, detrend=False, center=False,
                                            aggregate=aggregate)
        assert want[0] == 0 and peak_rel(signal.onset_envelope(logmel, mean=mean), want[1:]) < 1e-6
    env = signal.onset_envelope(logmel)
    env = env - env.mean()
    assert peak_rel(signal.autocorrelation(env), librosa.autocorrelate(env)) < 1e-6
    np.testing.assert_array_equal(signal.lag_bpm(200, SR / HOP)[1:],
                                  librosa.tempo_frequencies(200, hop_length=HOP, sr=SR)[1:])


def test_bin_pitch_classes_match_librosa(librosa):
    for sr, n_fft in ((22050, 8192), (24000, 2048)):
        f = signal.fft_frequencies(sr, n_fft)
        np.testing.assert_array_equal(f, np.fft.rfftfreq(n_fft, 1.0 / sr))
        np.testing.assert_array_equal(signal.fft_midi(sr, n_fft), np.round(librosa.hz_to_midi(np.maximum(f, 1.0))))


# ------------------------------------------------------------------------------------------------ pins


def _summary(a, points: int = 16) -> dict:
    """Shape, [mean, std, min, max] and `points` evenly spaced values of the row means (or of a 1-D array)."""
    a = np.asarray(a, np.float64)
    prof = a.reshape(-1, a.shape[-1]).mean(-1) if a.ndim > 1 else a
    idx = np.unique(np.linspace(0, len(prof) - 1, min(points, len(prof))).round().astype(int))
    return {"shape": list(a.shape), "stats": [a.mean(), a.std(), a.min(), a.max()], "profile": prof[idx].tolist()}


def _vector(a) -> list[float]:
    return np.asarray(a, np.float64).tolist()


def current_pins() -> dict:
    from mu_llama.audio import load_audio
    from mu_llama.emotion.features import audio_features
    from mu_llama.encoders.descriptors import frame_descriptors
    from mu_llama.plots import mel_spectrogram_db
    from mu_llama.recipes.musicnn import musicnn_input
    from mu_llama.recipes.targets import FRAME_STRIDE, RECEPTIVE_FIELD, log_mel, num_frames
    from mu_llama.tagger import timbre_features

    out = {}
    for path in sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".flac", ".ogg", ".mp3")):
        y = load_audio(path, SR)
        y24 = load_audio(path, 24000)
        S = signal.spectrogram(y, N_FFT, HOP)
        logmel = np.log(signal.mel_filterbank(SR, N_FFT, 64, 30.0, 11000.0) @ S ** 2 + 1e-8)
        env = signal.onset_envelope(np.log1p(100 * S))
        ac = signal.autocorrelation(env - env.mean())
        desc = frame_descriptors(torch.from_numpy(y24)[None], 24000, FRAME_STRIDE, RECEPTIVE_FIELD // 2,
                                 num_frames(len(y24)))[0]
        out[path.name] = {
            "signal": {
                "spectrogram": _summary(S),
                "log_mel": _summary(logmel),
                "mfcc": _summary(signal.mfcc(logmel, 20), 20),
                "chroma": _summary(signal.chroma_filterbank(SR, N_FFT) @ S ** 2, 12),
                "onset_envelope": _summary(env),
                "onset_peaks": int(signal.onset_peaks(env / env.std(), 0.5).sum()),
                "tempo_profile": _vector(signal.tempo_profile(ac / ac[0], SR / HOP, np.geomspace(30.0, 480.0, 25))),
                "spectrogram_torch_24k": _summary(signal.spectrogram(torch.from_numpy(y24), N_FFT, 320,
                                                                     window="hann_periodic").numpy()),
            },
            "callers": {
                "emotion.audio_features": _vector(audio_features(y, SR)),
                "tagger.timbre_features": _vector(timbre_features(y)),
                "descriptors.time_mean": _vector(desc.mean(0)),
                "targets.log_mel": _summary(log_mel(y24).T),
                "plots.mel_spectrogram_db": _summary(mel_spectrogram_db(y, SR)[0]),
                "musicnn.input": _summary(musicnn_input(load_audio(path, 16000)).T),
            },
        }
    return out


def _close(got, want, where: str) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            _close(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list) and want and isinstance(want[0], int) and where.endswith("shape"):
        assert got == want, where
    else:
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-5, atol=1e-6,
                                   err_msg=where)


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return float(f"{x:.9g}") if isinstance(x, float) else x


def test_outputs_on_the_bundled_clips_are_pinned():
    got = current_pins()
    if os.environ.get("MU_LLAMA_UPDATE_SIGNAL_PINS") == "1":
        PINS.write_text(json.dumps(_rounded(got), separators=(",", ":")) + "\n", encoding="utf-8")
    want = json.loads(PINS.read_text(encoding="utf-8"))
    assert set(got) == set(want) == {"bach_bwv66.6_organ.ogg", "essen_tanhuser_flute.mp3", "mozart_k458_strings.ogg",
                                     "mozart_k545_piano.flac"}
    _close(got, want, "pins")
