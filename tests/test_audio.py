"""mu_llama.audio: decoding, resampling, streaming and the error taxonomy, on audio synthesized in tmp_path."""

from __future__ import annotations

import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mu_llama import audio
from mu_llama.audio import (AUDIO_EXTENSIONS, TruncatedAudioWarning, decode_array, decode_bytes, iter_audio_files,
                            load_audio, probe, stream_audio)
from mu_llama.errors import AudioError, ConfigError, DependencyError

pytestmark = pytest.mark.filterwarnings("ignore::mu_llama.audio.TruncatedAudioWarning")


def tone(freq: float, sr: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(n,) or (n, channels) float32 sine; channel k is at freq * (k + 1) so the channels differ."""
    t = np.arange(round(sr * seconds)) / sr
    x = np.stack([amp * np.sin(2 * np.pi * freq * (k + 1) * t) for k in range(channels)], axis=1)
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(path, x, sr, **kw)
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def raises(path, reason: str, **kw) -> AudioError:
    with pytest.raises(AudioError) as ei:
        load_audio(path, **kw)
    err = ei.value
    assert err.reason == reason, str(err)
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and reason.replace("_", " ") in msg
    return err


# ---------------------------------------------------------------- error taxonomy

def test_missing_directory_empty(tmp_path):
    raises(tmp_path / "nope.wav", "missing")
    (tmp_path / "x.mp3").mkdir()
    raises(tmp_path / "x.mp3", "not_a_file")
    (tmp_path / "zero.wav").write_bytes(b"")
    raises(tmp_path / "zero.wav", "empty")


def test_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("these are liner notes, not a waveform\n" * 20)
    assert "text" in raises(tmp_path / "notes.wav", "not_audio").detail
    (tmp_path / "notes.mp3").write_text("renamed text file\n" * 20)  # libsndfile tries MPEG on .mp3 names
    raises(tmp_path / "notes.mp3", "not_audio")
    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    raises(tmp_path / "noise.flac", "not_audio")


def test_corrupt_headers(tmp_path):
    x = tone(440, 44100, 1.0, channels=2)
    for ext in ("wav", "flac", "ogg", "mp3"):
        data = write(tmp_path / f"ok.{ext}", x, 44100).read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(data[:40])  # inside the WAV/FLAC/Ogg header or the first MP3 frame
        raises(tmp_path / f"cut.{ext}", "corrupt")
    wav = bytearray((tmp_path / "ok.wav").read_bytes())
    wav[22:24] = (0).to_bytes(2, "little")  # PCM with 0 channels
    (tmp_path / "zero_ch.wav").write_bytes(wav)
    raises(tmp_path / "zero_ch.wav", "corrupt")


def test_truncated_data(tmp_path):
    x = tone(440, 44100, 2.0)
    data = write(tmp_path / "ok.flac", x, 44100).read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    assert "decoder error" in raises(tmp_path / "cut.flac", "corrupt").detail
    # a WAV cut mid-data decodes cleanly up to the cut: returned, with a warning naming the shortfall
    data = write(tmp_path / "ok.wav", x, 44100, subtype="FLOAT").read_bytes()
    header = len(data) - 4 * len(x)  # float WAV: RIFF + fmt + fact + PEAK chunks before the samples
    (tmp_path / "cut.wav").write_bytes(data[: header + 4 * 30000])
    with pytest.warns(TruncatedAudioWarning, match="cut.wav"):
        y = load_audio(tmp_path / "cut.wav", 44100)
    np.testing.assert_array_equal(y, x[:30000])
    with pytest.warns(TruncatedAudioWarning):
        assert sum(len(b) for b in stream_audio(tmp_path / "cut.wav", 44100)) == 30000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact file never warns
        load_audio(tmp_path / "ok.wav")


def test_unsupported_formats(tmp_path):
    (tmp_path / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    raises(tmp_path / "song.m4a", "unsupported_format")
    (tmp_path / "score.wav").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk" + bytes(64))
    assert "MIDI" in raises(tmp_path / "score.wav", "unsupported_format").detail
    wav = bytearray(write(tmp_path / "ok.wav", tone(440, 48000, 0.5), 48000).read_bytes())
    wav[20:22] = (0x2000).to_bytes(2, "little")  # AC-3 codec tag in a well-formed RIFF
    (tmp_path / "ac3.wav").write_bytes(wav)
    assert "0x2000" in raises(tmp_path / "ac3.wav", "unsupported_format").detail


def test_zero_length_too_long_and_silence(tmp_path):
    raises(write(tmp_path / "none.wav", np.zeros(0, np.float32), 16000), "zero_length")
    long = write(tmp_path / "long.flac", tone(220, 16000, 3.0), 16000)
    raises(long, "too_long", max_duration=2.5)
    with pytest.raises(AudioError, match="too long"):
        stream_audio(long, max_duration=2.5)
    assert len(load_audio(long, 16000, max_duration=3.0)) == 48000
    assert len(load_audio(long, 16000, offset=1.0, max_duration=2.5)) == 32000  # the limit bounds the decoded span
    silent = load_audio(write(tmp_path / "silence.wav", np.zeros((44100, 2), np.float32), 44100))
    assert silent.shape == (24000,) and not silent.any()


def test_links_and_permission(tmp_path, monkeypatch):
    os.symlink(tmp_path / "b.wav", tmp_path / "a.wav")
    os.symlink(tmp_path / "a.wav", tmp_path / "b.wav")
    assert "loop" in raises(tmp_path / "a.wav", "not_a_file").detail
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    assert "broken symbolic link" in raises(tmp_path / "dangling.wav", "missing").detail
    ok = write(tmp_path / "ok.wav", tone(440, 24000, 0.1), 24000)

    def denied(path, *args, **kw):  # tests run as root, where chmod 000 still reads: simulate the OS refusal
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(audio, "open", denied, raising=False)
    raises(ok, "permission")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file modes")
def test_chmod_000(tmp_path):
    ok = write(tmp_path / "ok.wav", tone(440, 24000, 0.1), 24000)
    ok.chmod(0)
    raises(ok, "permission")


# ---------------------------------------------------------------- decoding and resampling

@pytest.mark.parametrize("sr_in,n", [(44100, 44100), (48000, 96000 + 7), (22050, 12345), (24000, 5000), (8000, 999)])
def test_resample_length_and_pitch(tmp_path, sr_in, n):
    x = tone(1000, sr_in, n / sr_in)
    y = load_audio(write(tmp_path / "t.wav", x, sr_in, subtype="FLOAT"), 24000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - round(n * 24000 / sr_in)) <= 1
    assert abs(peak_hz(y, 24000) - 1000) <= 24000 / len(y) + 1e-9  # within one FFT bin
    if sr_in == 24000:
        np.testing.assert_array_equal(y, x)  # same rate: no resampling at all
    mid = slice(len(y) // 4, 3 * len(y) // 4)  # HQ resampling keeps the level of an in-band tone
    assert abs(np.sqrt(np.mean(y[mid] ** 2)) - 0.5 / np.sqrt(2)) < 2e-3


def test_stereo_mix(tmp_path):
    x = tone(300, 24000, 0.5, channels=2)
    y = load_audio(write(tmp_path / "st.wav", x, 24000, subtype="FLOAT"), 24000)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-7)
    anti = np.stack([x[:, 0], -x[:, 0]], axis=1)  # opposite polarity cancels
    assert np.abs(load_audio(write(tmp_path / "anti.wav", anti, 48000, subtype="FLOAT"))).max() < 1e-6


@pytest.mark.parametrize("ext,sr", [("flac", 44100), ("mp3", 48000), ("wav", 24000)])
def test_stream_concat_equals_load(tmp_path, ext, sr):
    rng = np.random.default_rng(1)
    x = (tone(523, sr, 7.3, channels=2) + 0.05 * rng.standard_normal((round(sr * 7.3), 2))).astype(np.float32)
    path = write(tmp_path / f"multi.{ext}", np.clip(x, -1, 1), sr)
    full = load_audio(path)
    blocks = list(stream_audio(path, block_seconds=1.3))
    assert len(blocks) >= 5 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    streamed = np.concatenate(blocks)
    assert streamed.shape == full.shape  # the whole file: nothing dropped at the end
    assert np.abs(streamed - full).max() < 1e-4


def test_stream_memory_is_bounded(tmp_path):
    sr, seconds = 8000, 300
    x = np.tile(tone(440, sr, 1.0), seconds)
    path = write(tmp_path / "long.wav", x, sr)
    full_bytes = seconds * 24000 * 4  # the whole resampled output, float32
    tracemalloc.start()
    n = sum(len(b) for b in stream_audio(path, 24000, block_seconds=5.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == seconds * 24000
    assert peak < full_bytes / 8, f"peak {peak} bytes vs full {full_bytes}"


def test_offset_and_duration(tmp_path):
    x = tone(440, 24000, 3.0)
    path = write(tmp_path / "t.wav", x, 24000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, offset=1.0, duration=1.5), x[24000:60000])
    np.testing.assert_array_equal(load_audio(path, offset=2.5, duration=9.0), x[60000:])
    ref = decode_array(x[24000:48000], 24000, 16000)
    np.testing.assert_array_equal(load_audio(path, 16000, offset=1.0, duration=1.0), ref)
    raises(path, "zero_length", offset=3.0)
    with pytest.raises(ConfigError):
        load_audio(path, offset=-1.0)
    # MP3 offsets are decoded-and-discarded (libsndfile's MP3 seek is approximate): sample-exact slices
    mp3 = write(tmp_path / "t.mp3", tone(440, 44100, 3.0, channels=2), 44100)
    whole = load_audio(mp3, 44100)
    np.testing.assert_array_equal(load_audio(mp3, 44100, offset=1.0, duration=1.0), whole[44100:88200])


@pytest.mark.parametrize("ext,tol", [("wav", 1e-4), ("flac", 1e-4), ("ogg", None), ("mp3", None)])
def test_format_round_trips(tmp_path, ext, tol):
    x = tone(1000, 44100, 2.0, channels=2)
    path = write(tmp_path / f"rt.{ext}", x, 44100)
    info = probe(path)
    assert (info.format, info.sample_rate, info.channels, info.frames) == (ext, 44100, 2, 88200)
    assert info.duration == pytest.approx(2.0) and info.path == str(path)
    y = load_audio(path, 44100)
    assert len(y) == 88200
    if tol is not None:  # lossless: only 16-bit quantization
        assert np.abs(y - x.mean(axis=1)).max() < tol
    else:  # lossy: same pitch content and level
        assert abs(peak_hz(y, 44100) - 1000) < 2
        assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x.mean(axis=1) ** 2)), rel=0.05)
    np.testing.assert_array_equal(decode_bytes(path.read_bytes(), 44100), y)


def test_decode_bytes_and_array_errors():
    with pytest.raises(AudioError, match="upload.wav: empty"):
        decode_bytes(b"", name="upload.wav")
    with pytest.raises(AudioError, match="upload.wav: not audio"):
        decode_bytes(b"hello\n" * 100, name="upload.wav")
    pcm = (tone(440, 16000, 0.5) * 32767).astype(np.int16)
    np.testing.assert_allclose(decode_array(pcm, 16000, 16000), pcm / 32768, atol=1e-7)
    with pytest.raises(ConfigError, match="channel-first"):
        decode_array(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(AudioError, match="zero length"):
        decode_array(np.zeros(0, np.float32), 16000)
    with pytest.raises(ConfigError):
        load_audio("x.wav", sample_rate=0)


# ---------------------------------------------------------------- the soundfile seam (its private names, one place)

def _noisy_tone(tmp_path, ext="mp3", sr=48000, channels=1) -> Path:
    x = tone(440, sr, 5.0, channels)
    x = x + 0.02 * np.random.default_rng(0).standard_normal(x.shape)
    return write(tmp_path / f"seam.{ext}", np.clip(x, -1, 1).astype(np.float32), sr)


def _blocks(path, block: int) -> np.ndarray:
    with sf.SoundFile(path) as f:
        return np.concatenate(list(audio._read_blocks(f, path, block)))


@pytest.mark.parametrize("ext,sr,channels", [("mp3", 48000, 1), ("mp3", 44100, 2), ("ogg", 44100, 2),
                                             ("flac", 48000, 1)])
def test_block_reads_equal_soundfiles_whole_read(tmp_path, ext, sr, channels):
    """Any block size decodes exactly what soundfile's one-call whole read gives (MP3 included)."""
    path = _noisy_tone(tmp_path, ext, sr, channels)
    whole, _ = sf.read(path, dtype="float32", always_2d=True)
    assert whole.shape == (round(sr * 5.0), channels)
    for block in (4096, 777):
        np.testing.assert_array_equal(_blocks(path, block), whole)


def test_soundfiles_own_block_reads_still_differ_on_mp3(tmp_path):
    """Why _readf_float exists: SoundFile.read() re-seeks after every call, which re-primes the MP3 decoder. If this
    fails, soundfile's public reads became exact and the private seam can go (SoundFile.read(out=...))."""
    path = _noisy_tone(tmp_path)
    whole, _ = sf.read(path, dtype="float32", always_2d=True)
    with sf.SoundFile(path) as f:
        public = np.concatenate(list(f.blocks(4096, dtype="float32", always_2d=True)))
    assert public.shape == whole.shape and not np.array_equal(public, whole)
    np.testing.assert_array_equal(_blocks(path, 4096), whole)


@pytest.fixture
def fresh_seam():
    audio._libsndfile.cache_clear()
    yield
    audio._libsndfile.cache_clear()


def test_moved_soundfile_internals_fail_loudly_with_the_version(tmp_path, monkeypatch, fresh_seam):
    path = write(tmp_path / "t.wav", tone(440, 8000, 0.5), 8000)
    real = sf._snd

    class Lib:  # soundfile's cffi library without the one function we call that soundfile itself does not need
        def __getattr__(self, name):
            if name == "sf_readf_float":
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(sf, "_snd", Lib())
    with pytest.raises(DependencyError, match=rf"soundfile {sf.__version__}: soundfile\._snd\.sf_readf_float not found"
                                              r".*supports soundfile>=0\.12"):
        load_audio(path)
    monkeypatch.setattr(audio, "sf", type("Moved", (), {"_ffi": sf._ffi})())  # no _snd at all
    audio._libsndfile.cache_clear()
    with pytest.raises(DependencyError, match=r"soundfile\._snd not found"):
        audio._libsndfile()
    monkeypatch.undo()
    audio._libsndfile.cache_clear()
    assert len(load_audio(path, 8000)) == 4000

    class Renamed:  # a SoundFile whose handle attribute moved
        closed, channels, _file = False, 1, object()

    with pytest.raises(DependencyError, match=r"\._file is object, not libsndfile's SNDFILE \* handle"):
        audio._readf_float(Renamed(), np.empty((4, 1), np.float32))


# ---------------------------------------------------------------- file discovery

def test_iter_audio_files(tmp_path):
    root = tmp_path / "music"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "album.mp3").mkdir()                             # a directory with an audio name: kept (not_a_file)
    for rel in ("a.wav", "b/c.FLAC", "b/deep/d.ogg", "album.mp3/e.mp3"):
        write(root / rel, tone(440, 8000, 0.05), 8000, format=Path(rel).suffix[1:].upper())
    (root / "notes.txt").write_text("not listed\n")
    (root / "cover.jpg").write_bytes(b"\xff\xd8")
    os.symlink(root, root / "b" / "loop")                    # a cycle back to the top
    os.symlink(root / "gone.wav", root / "dangling.wav")     # broken link: kept (missing)
    expected = sorted(str(root / r) for r in ("a.wav", "b/c.FLAC", "b/deep/d.ogg", "album.mp3", "album.mp3/e.mp3",
                                              "dangling.wav"))
    assert [str(p) for p in iter_audio_files(root)] == expected
    assert [p.name for p in iter_audio_files(str(root / "**" / "*.ogg"))] == ["d.ogg"]
    assert list(iter_audio_files(str(root / "*.zzz"))) == []
    assert list(iter_audio_files(root / "a.wav")) == [root / "a.wav"]
    assert list(iter_audio_files(root / "missing.wav")) == [root / "missing.wav"]
    lst = tmp_path / "files.lst"
    # relative, absolute duplicate, the same file through a symlinked directory, a directory to walk
    lst.write_text(f"# my picks\nmusic/a.wav\n\n{root / 'a.wav'}\nmusic/b/loop/a.wav\nmusic/b/deep\n")
    assert list(iter_audio_files(lst)) == [root / "a.wav", root / "b" / "deep" / "d.ogg"]
    assert all(p.lower().endswith(AUDIO_EXTENSIONS) for p in expected)


# ---------------------------------------------------------------- bundled example clips

EXAMPLES = Path(audio.__file__).parent / "assets" / "examples"


def test_bundled_examples_match_manifest():
    import hashlib
    import json

    manifest = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))
    files = [c["file"] for c in manifest["clips"]]
    assert sorted(p.name for p in iter_audio_files(EXAMPLES)) == sorted(files)
    assert {Path(f).suffix for f in files} >= {".ogg", ".mp3", ".flac"}
    for clip in manifest["clips"]:
        path = EXAMPLES / clip["file"]
        data = path.read_bytes()
        assert len(data) < 300_000 and hashlib.sha256(data).hexdigest() == clip["sha256"]
        info = probe(path)
        assert (info.format, info.sample_rate, info.channels) == (clip["format"], clip["sample_rate"], clip["channels"])
        assert 8.0 <= info.duration <= 12.5 and info.duration == pytest.approx(clip["duration_s"], abs=0.05)
        y = load_audio(path)
        assert abs(len(y) - round(info.frames * 24000 / info.sample_rate)) <= 1
        assert 0.5 < np.abs(y).max() <= 1.0 and np.sqrt(np.mean(y ** 2)) > 0.03  # normalised, not silent


def test_write_audio_long_ogg_in_blocks_roundtrips(tmp_path):
    """One large libsndfile Vorbis write crashes the process; write_audio writes in blocks (any length, any format)."""
    from mu_llama.audio import WRITE_BLOCK_FRAMES, write_audio

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((3 * WRITE_BLOCK_FRAMES + 123, 2))).astype(np.float32)
    for suffix in (".ogg", ".flac", ".wav"):
        p = write_audio(tmp_path / f"x{suffix}", x, 48000)
        y, sr = sf.read(str(p), dtype="float32", always_2d=True)
        assert sr == 48000 and y.shape == x.shape
        if suffix != ".ogg":  # lossless
            assert np.abs(y - x).max() < 1e-4
