"""Audio loading: any wav/flac/ogg/mp3 file, upload or in-memory array -> mono float32 at the model's sample rate.

Decoding is libsndfile (bundled in the `soundfile` wheel, MP3 included); resampling is soxr 'HQ'. One pipeline
serves every entry point: read float32 frames (n, channels) -> mean over channels -> resample. `stream_audio`
runs the same pipeline block by block through soxr's streaming resampler, so its concatenated blocks equal
`load_audio`'s output (soxr's one-shot and streaming paths share one filter) and an hour-long file streams
in bounded memory. Nothing is silently cut: files are read to the decoder's end, not to the header's promise.

Damaged files (policy). Every user-caused problem raises `AudioError(path, reason, detail)`, one line:
  * the decoder reports an error inside the data (FLAC lost sync, a garbled MP3 frame) -> "corrupt", naming the
    second where it failed; no partial audio is returned, since what follows the damage is unknown;
  * the data simply ends early but decodes cleanly (a cut-off WAV/MP3 download) -> the samples are returned and a
    `TruncatedAudioWarning` says how much the header promised. A header cut so short that nothing decodes is "corrupt";
  * a truncated Ogg can lose its end-of-stream position, which libsndfile then reports as 0 frames: "zero_length".
MP3 seeking in libsndfile is approximate (fuzzy Xing-TOC seeks), so MP3 offsets are reached by decoding and discarding;
for the same reason frames are read through libsndfile's C call directly (soundfile's `read` re-seeks after every call).
"""

from __future__ import annotations

import errno
import functools
import glob
import io
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mu_llama.errors import AudioError, ConfigError, DependencyError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
LIST_EXTENSIONS = (".txt", ".lst")
_QUALITY = "HQ"            # soxr quality: 'HQ' is transparent for analysis; 'VHQ' costs ~2x for no audible gain
_READ_FRAMES = 1 << 16     # frames per libsndfile read call in load_audio / decode_bytes
_TRUNC_TOL_S = 0.1         # MP3 headers without a frame count are estimates; ignore shortfalls below this
# libsndfile-decodable WAV codec tags (fmt chunk); others (AC-3, WMA, ...) are "unsupported_format", not "corrupt".
_WAV_CODECS = {0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055, 0xFFFE}
# Containers recognised by magic bytes that libsndfile cannot decode.
_FOREIGN = {b"ftyp": "MP4/M4A", b"\x1aE\xdf\xa3": "Matroska/WebM", b"0&\xb2u": "ASF/WMA", b"MAC ": "Monkey's Audio",
            b"wvpk": "WavPack", b"MThd": "MIDI (symbolic; render it to audio first)", b"#!AM": "AMR"}
_FOREIGN_KINDS = frozenset(_FOREIGN.values()) | {"AAC (ADTS)"}


class TruncatedAudioWarning(UserWarning):
    """The data ended before the header's promised length; the samples that decoded cleanly were returned."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int          # as the header declares it; an estimate for MP3 without a Xing/LAME frame count
    duration: float      # seconds = frames / sample_rate
    format: str          # container, lower case: "wav", "flac", "ogg", "mp3", ...


def probe(path: str | Path) -> AudioInfo:
    """Open `path`, check it is decodable audio with at least one frame, and return its header facts."""
    with _open(path) as f:
        return AudioInfo(str(path), f.samplerate, f.channels, f.frames, f.frames / f.samplerate, f.format.lower())


def load_audio(path: str | Path, sample_rate: int = 24000, *, offset: float = 0.0, duration: float | None = None,
               max_duration: float | None = None) -> np.ndarray:
    """Decode `path` (or the span [offset, offset + duration) seconds) to mono float32 (n,) at `sample_rate`.
    `max_duration` (seconds) bounds the span to decode: longer raises AudioError "too_long"."""
    _check_rate(sample_rate)
    if offset < 0 or (duration is not None and duration <= 0):
        raise ConfigError(f"offset must be >= 0 and duration > 0; got offset={offset}, duration={duration}")
    with _open(path) as f:
        sr, start = f.samplerate, round(offset * f.samplerate)
        if start >= f.frames > 0:
            raise AudioError(path, "zero_length", f"offset {offset:g} s is past the end ({f.frames / sr:.2f} s)")
        want = None if duration is None else max(1, round(duration * sr))
        span = f.frames - start if want is None else min(want, f.frames - start)
        _check_length(path, span / sr, max_duration)
        if start and f.format != "MP3":
            f.seek(start)
        elif start:  # decode and discard up to the offset: MP3 seeks land a few hundred ms off
            for _ in _read_blocks(f, path, _READ_FRAMES, limit=start):
                pass
        mono = _collect(f, path, want, _max_frames(max_duration, sr), check_end=want is None)
    return _resample(mono, sr, sample_rate)


def stream_audio(path: str | Path, sample_rate: int = 24000, *, block_seconds: float = 30.0,
                 max_duration: float | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks (about `block_seconds` each) of the whole file at `sample_rate`.
    Memory is bounded by two input blocks; np.concatenate(list(...)) equals load_audio(path, sample_rate).
    The file is opened and checked now, so a bad file raises here rather than at the first next()."""
    _check_rate(sample_rate)
    if not block_seconds > 0:
        raise ConfigError(f"block_seconds must be > 0, got {block_seconds}")
    f = _open(path)
    try:
        _check_length(path, f.frames / f.samplerate, max_duration)
    except AudioError:
        f.close()
        raise
    return _stream(f, path, sample_rate, max(1, round(block_seconds * f.samplerate)), max_duration)


def _stream(f: sf.SoundFile, path, sample_rate: int, block_frames: int, max_duration: float | None):
    sr = f.samplerate
    rs = None if sr == sample_rate else soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality=_QUALITY)
    with f:
        pending, total = None, 0   # hold one block back: the last one must be sent with last=True to flush soxr
        for block in _read_blocks(f, path, block_frames, max_frames=_max_frames(max_duration, sr)):
            total += len(block)
            if pending is not None:
                out = pending if rs is None else rs.resample_chunk(pending)
                if len(out):
                    yield out
            pending = _mono(block)
        if pending is None:
            raise AudioError(path, "zero_length", "no frames decoded")
        yield pending if rs is None else rs.resample_chunk(pending, last=True)
        _warn_if_short(f, path, total)


def decode_array(samples: np.ndarray, orig_sr: int, sample_rate: int = 24000) -> np.ndarray:
    """In-memory audio, (n,) or (n, channels), float or integer PCM -> mono float32 (m,) at `sample_rate`."""
    _check_rate(orig_sr)
    _check_rate(sample_rate)
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] > 64) or x.dtype.kind not in "fiu":
        raise ConfigError(f"expected a numeric (n,) or (n, channels) array, got {x.dtype} {x.shape} "
                          "(transpose channel-first arrays)")
    if x.dtype.kind in "iu":  # integer PCM -> [-1, 1): int16 / 32768, uint8 (x - 128) / 128
        lo, hi = np.iinfo(x.dtype).min, np.iinfo(x.dtype).max
        x = (x.astype(np.float64) - (lo + hi + 1) / 2) / ((hi - lo + 1) / 2)
    if x.shape[0] == 0:
        raise AudioError("<array>", "zero_length", "empty array")
    if not np.isfinite(x).all():
        raise AudioError("<array>", "corrupt", "non-finite samples (NaN or inf)")
    return _resample(_mono(x.astype(np.float32, copy=False)), orig_sr, sample_rate)


def decode_bytes(data: bytes, sample_rate: int = 24000, name: str = "<bytes>", *,
                 max_duration: float | None = None) -> np.ndarray:
    """An encoded file held in memory (an upload, a datasets row's bytes) -> mono float32 at `sample_rate`."""
    _check_rate(sample_rate)
    with _open(data, name) as f:
        _check_length(name, f.frames / f.samplerate, max_duration)
        mono = _collect(f, name, None, _max_frames(max_duration, f.samplerate), check_end=True)
        return _resample(mono, f.samplerate, sample_rate)


WRITE_BLOCK_FRAMES = 65536


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int, *, subtype: str | None = None) -> Path:
    """Write (n,) or (n, channels) float samples; the format follows the suffix (.wav .flac .ogg .mp3).

    Written in blocks: libsndfile's Vorbis encoder crashes the process (SIGSEGV) on one large write (seen with
    soundfile 0.14: 240 s of 48 kHz stereo to .ogg), which no exception can turn into an error message."""
    path = Path(path)
    samples = np.asarray(samples, dtype=np.float32)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, subtype=subtype) as f:
        for start in range(0, len(samples), WRITE_BLOCK_FRAMES):
            f.write(samples[start:start + WRITE_BLOCK_FRAMES])
    return path


def iter_audio_files(source: str | Path) -> Iterator[Path]:
    """Expand a directory (recursive), a glob, one file, or a .txt/.lst list (one path per line, relative to the list,
    '#' comments) into sorted paths, one per real file. Directory walks follow symlinks but never a loop, and keep every
    entry with an audio extension, including broken links and directories named like `x.mp3`: they are yielded so the
    caller records their AudioError ("missing", "not_a_file") instead of losing them silently. An explicitly named
    file or a non-existent path is yielded as-is for the same reason; a glob that matches nothing yields nothing
    (globs use pathlib rules: '**' recurses but does not enter symlinked directories)."""
    src, found = Path(source), []
    if src.suffix.lower() in LIST_EXTENSIONS and src.is_file():
        for line in src.read_text(encoding="utf-8").splitlines():
            if (entry := line.strip()) and not entry.startswith("#"):
                found += _expand(entry if os.path.isabs(entry) else str(src.parent / entry))
    else:
        found = _expand(str(source))
    unique: dict[str, str] = {}  # one path per real file: links and symlinked dirs reach the same file twice
    for p in sorted(found, key=lambda q: os.path.normpath(os.path.abspath(q))):
        unique.setdefault(os.path.realpath(p), p)
    yield from sorted(map(Path, unique.values()), key=lambda q: os.path.normpath(os.path.abspath(q)))


def _expand(entry: str) -> list[str]:
    if not os.path.lexists(entry) and glob.has_magic(entry):
        # pathlib's '**' does not descend into symlinked directories (glob.glob's does, loops included)
        parts = Path(entry).parts
        i = next(k for k, part in enumerate(parts) if glob.has_magic(part))
        matches = Path(*parts[:i] or ".").glob(str(Path(*parts[i:])))
        return [p for m in sorted(map(str, matches)) for p in _expand(m)]
    if not os.path.isdir(entry) or entry.lower().endswith(AUDIO_EXTENSIONS):
        return [entry]
    out, seen = [], {os.path.realpath(entry)}
    for root, dirs, files in os.walk(entry, followlinks=True):
        for d in list(dirs):  # prune directories already visited (symlink loops, links to ancestors)
            if (real := os.path.realpath(os.path.join(root, d))) in seen:
                dirs.remove(d)
            seen.add(real)
        out += [os.path.join(root, n) for n in files + dirs if n.lower().endswith(AUDIO_EXTENSIONS)]
    return out


# ---------------------------------------------------------------- decoding internals

def _check_rate(sr: int) -> None:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ConfigError(f"sample rate must be a positive integer, got {sr!r}")


def _check_length(name, seconds: float, max_duration: float | None) -> None:
    if max_duration is not None and seconds > max_duration:
        raise AudioError(name, "too_long", f"{seconds:.1f} s exceeds max_duration {max_duration:g} s")


def _max_frames(max_duration: float | None, sr: int) -> int | None:
    return None if max_duration is None else int(max_duration * sr) + 1


def _mono(x: np.ndarray) -> np.ndarray:
    """(n,) or (n, c) float32 -> (n,) float32: the channel mean (keeps the level of correlated stereo)."""
    return x if x.ndim == 1 else x[:, 0].copy() if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    # length = round(n * sr_out / sr_in) within one sample; same filter as soxr.ResampleStream used by _stream
    if sr_in == sr_out:
        return x
    return soxr.resample(np.ascontiguousarray(x), sr_in, sr_out, quality=_QUALITY).astype(np.float32, copy=False)


def _collect(f: sf.SoundFile, name, want: int | None, max_frames: int | None, check_end: bool) -> np.ndarray:
    blocks = [_mono(b) for b in _read_blocks(f, name, _READ_FRAMES, limit=want, max_frames=max_frames)]
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if len(mono) == 0:
        raise AudioError(name, "zero_length", "no frames decoded")
    if check_end:
        _warn_if_short(f, name, len(mono))
    return mono


def _read_blocks(f: sf.SoundFile, name, block_frames: int, limit: int | None = None,
                 max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield float32 (n, channels) blocks until EOF (or `limit` frames); a decoder error raises "corrupt",
    more than `max_frames` raises "too_long" (guards MP3 headers that underestimate)."""
    total = 0
    while limit is None or total < limit:
        buf = np.empty((block_frames if limit is None else min(block_frames, limit - total), f.channels), np.float32)
        n, code = _readf_float(f, buf)
        if code:
            at = (total + max(n, 0)) / f.samplerate
            raise AudioError(name, "corrupt", f"decoder error near {at:.2f} s: {_sf_message(code)}")
        if n <= 0:
            return
        block = buf[:n]
        if not np.isfinite(block).all():
            raise AudioError(name, "corrupt", f"non-finite samples near {total / f.samplerate:.2f} s")
        total += n
        if max_frames is not None and total > max_frames:
            raise AudioError(name, "too_long", f"more than {max_frames / f.samplerate:.1f} s of audio")
        yield block


def _warn_if_short(f: sf.SoundFile, name, decoded: int) -> None:
    declared = f.frames
    if f.format == "WAV":  # libsndfile shrinks a short WAV's frame count; its log keeps "data : N (should be M)"
        for line in f.extra_info.splitlines():
            if line.startswith("data") and "(should be" in line:
                have, _, should = line.partition("(should be")
                promised, actual = int(have.split(":")[1]), int(should.strip(" )"))
                declared = max(declared, f.frames * promised // max(actual, 1))
    if declared - decoded > _TRUNC_TOL_S * f.samplerate:
        warnings.warn(f"{name}: truncated: decoded {decoded / f.samplerate:.2f} s of the "
                      f"{declared / f.samplerate:.2f} s the header declares; returning what decoded",
                      TruncatedAudioWarning, stacklevel=4)


def _sf_message(code: int) -> str:
    return sf.LibsndfileError(code).error_string.replace("\n", " ")  # public: libsndfile's sf_error_number(code)


# --- the one place that reaches into soundfile's private names -----------------------------------------------------
# soundfile's SoundFile.read() re-seeks to tell() + n after every call (SoundFile._cdata_io). An MP3 seek re-primes
# libsndfile's decoder (and is approximate, see the module docstring), so block reads through it differ from one whole
# read. Frames are therefore decoded by libsndfile's sf_readf_float on soundfile's own handle, which never seeks.
# Private names used, all here: soundfile._snd (the cffi library), soundfile._ffi, SoundFile._file (SNDFILE *).
SOUNDFILE_SUPPORTED = ">=0.12,<0.15"  # checked against 0.14.0; the names are unchanged since 0.12 (first MP3 wheels)


@functools.cache
def _libsndfile():
    """(soundfile._snd, soundfile._ffi), checked on first use: a DependencyError naming soundfile's version if moved."""
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    missing = [name for name, obj in (("soundfile._snd", snd), ("soundfile._ffi", ffi)) if obj is None]
    if ffi is not None and not all(hasattr(ffi, a) for a in ("cast", "typeof", "CData")):
        missing.append("soundfile._ffi.cast/typeof/CData")
    if snd is not None:
        missing += [f"soundfile._snd.{fn}" for fn in ("sf_readf_float", "sf_error") if not hasattr(snd, fn)]
    if missing:
        raise DependencyError("soundfile", SOUNDFILE_SUPPORTED, f"{', '.join(missing)} not found (mu_llama.audio "
                              "reads frames through libsndfile directly; see _readf_float)")
    return snd, ffi


def _readf_float(f: sf.SoundFile, buf: np.ndarray) -> tuple[int, int]:
    """Decode up to len(buf) frames at f's position into buf, C-contiguous float32 (n, f.channels).
    Returns (frames decoded, libsndfile's error code: 0 = none); the position advances by exactly the frames decoded."""
    if f.closed:
        raise ValueError("read from a closed SoundFile")
    if buf.dtype != np.float32 or buf.ndim != 2 or buf.shape[1] != f.channels or not buf.flags.c_contiguous:
        raise ValueError(f"buf must be C-contiguous float32 (n, {f.channels}), got {buf.dtype} {buf.shape}")
    snd, ffi = _libsndfile()
    handle = getattr(f, "_file", None)
    if not isinstance(handle, ffi.CData) or ffi.typeof(handle) != ffi.typeof("SNDFILE *"):
        raise DependencyError("soundfile", SOUNDFILE_SUPPORTED, f"an open SoundFile's ._file is {type(handle).__name__}"
                              ", not libsndfile's SNDFILE * handle")
    n = snd.sf_readf_float(handle, ffi.cast("float *", buf.ctypes.data), len(buf))
    return int(n), int(snd.sf_error(handle))


def _open(src: str | Path | bytes, name: str | None = None) -> sf.SoundFile:
    """Check the path (or bytes), open it with libsndfile, and map every failure to an AudioError reason."""
    name = name if isinstance(src, bytes) else str(src)
    if isinstance(src, bytes):
        if not src:
            raise AudioError(name, "empty", "0 bytes")
        fobj, size = io.BytesIO(src), len(src)
    else:
        try:
            st = os.stat(src)
        except FileNotFoundError:
            link = f"broken symbolic link to {os.readlink(src)}" if os.path.islink(src) else "no such file"
            raise AudioError(name, "missing", link) from None
        except PermissionError:
            raise AudioError(name, "permission", "cannot reach the file (permission denied)") from None
        except OSError as e:  # ELOOP: a symlink cycle; ENOTDIR: a parent is a file
            reason = {errno.ELOOP: "not_a_file", errno.ENOTDIR: "missing"}.get(e.errno, "decode_failed")
            raise AudioError(name, reason, "symbolic link loop" if e.errno == errno.ELOOP else e.strerror) from None
        if stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise AudioError(name, "not_a_file", "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        if st.st_size == 0:
            raise AudioError(name, "empty", "0 bytes")
        try:
            fobj, size = open(src, "rb"), st.st_size
        except PermissionError:
            raise AudioError(name, "permission", "permission denied") from None
    with fobj:
        head = fobj.read(4096)
        try:
            f = sf.SoundFile(io.BytesIO(src) if isinstance(src, bytes) else src)
        except sf.LibsndfileError as e:
            raise _open_error(name, e.code, _sf_message(e.code), head, fobj, size) from None
        except (RuntimeError, TypeError, ValueError) as e:  # anything else soundfile raises on open
            raise AudioError(name, "decode_failed", str(e).replace("\n", " ")) from None
    if f.frames == 0:
        hint = ": an empty stream, or an Ogg file cut before its last page" if f.format == "OGG" else ""
        f.close()
        raise AudioError(name, "zero_length", "0 frames" + hint)
    return f


def _open_error(name: str, code: int, msg: str, head: bytes, fobj, size: int) -> AudioError:
    """Map a libsndfile open failure to a reason. libsndfile's codes are coarse (a truncated FLAC/Ogg header reads
    as 'unimplemented format', any failed MP3 open as 'not a regular file'), so the file's magic bytes decide."""
    kind = _sniff(head)
    if kind in _FOREIGN_KINDS:
        return AudioError(name, "unsupported_format", f"{kind} is not decodable by libsndfile")
    if code == 2:  # 'System error.': the OS refused after our own checks passed (a race, an I/O error)
        return AudioError(name, "decode_failed", msg)
    if code == 1 or (code == 7 and kind != "mp3"):  # 'Format not recognised'; a non-MP3 named .mp3 lands on 7
        return AudioError(name, "not_audio", "text, not audio" if kind == "text" else "unrecognised binary data")
    if kind == "wav" and (tag := _wav_codec(head)) is not None and tag not in _WAV_CODECS:
        return AudioError(name, "unsupported_format", f"WAV codec tag 0x{tag:04X} is not decodable by libsndfile")
    if kind in ("flac", "ogg") and _header_cut(kind, fobj, size):
        return AudioError(name, "corrupt", f"{kind.upper()} header is truncated")
    if code == 4 or "unimplemented" in msg or "unsupported" in msg:
        return AudioError(name, "unsupported_format", msg)
    return AudioError(name, "corrupt", "cannot open MP3 stream" if code == 7 else msg)


def _sniff(head: bytes) -> str | None:
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] in (b"fLaC", b"OggS"):
        return "flac" if head[:4] == b"fLaC" else "ogg"
    for magic, kind in _FOREIGN.items():
        if head[:len(magic)] == magic or (magic == b"ftyp" and head[4:8] == magic):
            return kind
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "AAC (ADTS)" if head[:3] != b"ID3" and head[1] & 0x06 == 0 else "mp3"  # layer bits 00 = ADTS
    text = head.decode("utf-8", errors="replace")  # U+FFFD marks undecodable bytes: binary is full of them
    return "text" if sum(c != "\ufffd" and (c.isprintable() or c.isspace()) for c in text) >= 0.95 * len(text) else None


def _wav_codec(head: bytes) -> int | None:
    pos = 12  # walk RIFF chunks to 'fmt '; WAVE_FORMAT_EXTENSIBLE's sub-format tag sits 24 bytes into the chunk
    while pos + 10 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            tag = int.from_bytes(head[pos + 8:pos + 10], "little")
            sub = head[pos + 32:pos + 34]
            return int.from_bytes(sub, "little") if tag == 0xFFFE and len(sub) == 2 else tag
        pos += 8 + size + (size & 1)
    return None


def _header_cut(kind: str, fobj, size: int) -> bool:
    """True if the file ends inside its FLAC metadata blocks or its Ogg header pages (granule position 0)."""
    pos = 4 if kind == "flac" else 0
    for _ in range(64):
        fobj.seek(pos)
        hdr = fobj.read(4 if kind == "flac" else 282)
        if kind == "flac":
            if len(hdr) < 4:
                return True
            pos += 4 + int.from_bytes(hdr[1:4], "big")
            if hdr[0] & 0x80:          # last metadata block: at least one audio frame must follow
                return pos >= size
        else:
            if len(hdr) < 27 or hdr[:4] != b"OggS" or len(hdr) < 27 + hdr[26]:
                return True
            pos += 27 + hdr[26] + sum(hdr[27:27 + hdr[26]])
            if pos > size:
                return True
            if int.from_bytes(hdr[6:14], "little") not in (0, 2**64 - 1):  # first audio page: headers complete
                return False
        if pos > size:
            return True
    return False
