"""Descriptor hidden state (mu_llama.encoders.descriptors) and the adapter's descriptor input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mu_llama.adapters import MusicAdapter, MusicAdapterConfig
from mu_llama.encoders import (
    DESCRIPTOR_DIM,
    DescriptorEncoder,
    build_random,
    builtin_config,
)
from mu_llama.encoders.descriptors import N_MELS, N_MFCC, TEMPI

from mu_llama.errors import ConfigError

SR = 24000
CHROMA = N_MELS + 2 * N_MFCC                  # first chroma channel
PERIODICITY = DESCRIPTOR_DIM - len(TEMPI)     # first periodicity channel


def wide_encoder(seed: int = 0):
    """A random MERT-shaped encoder wide enough to carry the descriptors (D = 192 >= 168)."""
    cfg = dataclasses.replace(builtin_config("tiny"), hidden_size=192, num_attention_heads=4, intermediate_size=64)
    return DescriptorEncoder(build_random(cfg, seed=seed))


@pytest.fixture(scope="module")
def enc():
    return wide_encoder()


def clip_means(enc, wave: np.ndarray) -> torch.Tensor:
    """(DESCRIPTOR_DIM,) time-mean of the descriptor state of one clip."""
    out = enc(torch.from_numpy(wave)[None])
    return out.hidden_states[-1, 0, :, :DESCRIPTOR_DIM].mean(0)


def test_shapes_layers_and_batch_equals_single(enc):
    rng = np.random.default_rng(0)
    a, b = ((0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR * 2, SR * 3 // 2))
    batch = torch.zeros(2, len(a))
    batch[0], batch[1, : len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    out = enc(batch, torch.tensor([len(a), len(b)]))
    assert out.hidden_states.shape[0] == enc.num_layers == enc.inner.num_layers + 1
    alone = enc(torch.from_numpy(b)[None])
    t = alone.hidden_states.shape[2]
    assert int(out.frame_mask[1].sum()) == t
    torch.testing.assert_close(out.hidden_states[:, 1, :t], alone.hidden_states[:, 0], atol=1e-5, rtol=1e-5)
    assert torch.all(out.hidden_states[-1, :, :, DESCRIPTOR_DIM:] == 0)            # padding channels
    assert torch.all(out.hidden_states[-1, 1, t:] == 0)                             # padding frames
    only = enc(batch, torch.tensor([len(a), len(b)]), layers=[-1])                  # the descriptor state alone
    assert torch.equal(only.hidden_states[0], out.hidden_states[-1])


def test_chroma_of_a_tone_and_triads_tell_major_from_minor(enc):
    t = np.arange(SR * 2) / SR
    a440 = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    chroma = clip_means(enc, a440)[CHROMA: CHROMA + 12]
    assert int(chroma.argmax()) == 9                                                 # A
    def chord(midis):
        return sum(0.2 * np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in midis).astype(np.float32)
    triads = CHROMA + 12
    c_major, c_minor = clip_means(enc, chord([60, 64, 67])), clip_means(enc, chord([60, 63, 67]))
    assert int(c_major[triads: triads + 12].argmax()) == 0                            # C major triad at root C
    assert int(c_minor[triads + 12: triads + 24].argmax()) == 0                       # C minor triad at root C
    assert c_major[triads + 24] > c_major[triads + 25] and c_minor[triads + 25] > c_minor[triads + 24]


def test_periodicity_peaks_at_the_click_tempo(enc):
    x = np.zeros(SR * 6, np.float32)
    for k in range(12):                                   # clicks every 0.5 s = 120 BPM
        x[int(k * 0.5 * SR): int(k * 0.5 * SR) + 200] = 0.5
    per = clip_means(enc, x)[PERIODICITY:]
    on_grid = [TEMPI.index(b) for b in (30.0, 60.0, 120.0)]   # lags of 1, 2 and 4 click periods
    off_grid = [i for i in range(len(TEMPI)) if i not in on_grid]
    assert int(per.argmax()) in on_grid and per[on_grid[-1]] > 0.3 * per.max()
    assert per[off_grid].max() < 0.05 * per.max()


def test_narrow_encoder_rejected():
    with pytest.raises(ConfigError, match="width"):
        DescriptorEncoder(build_random("tiny"))


def adapter_pair():
    base = MusicAdapterConfig(enc_layers=3, enc_dim=192, llm_dim=48, bridge_blocks=1, bridge_hidden=64)
    with_desc = dataclasses.replace(base, descriptor_dim=DESCRIPTOR_DIM)
    torch.manual_seed(0)
    plain = MusicAdapter(base)
    desc = MusicAdapter(with_desc)
    desc.load_state_dict(plain.state_dict(), strict=False)
    return plain, desc


def test_zero_initialised_descriptor_input_is_a_no_op():
    from mu_llama.adapters import PooledMusic

    plain, desc = adapter_pair()
    g = torch.Generator().manual_seed(1)
    sums, counts = torch.randn(2, 1, 4, 192, generator=g), torch.tensor([[50.0], [30.0]])
    with_desc = desc(PooledMusic(sums, counts)).tokens
    without = plain(PooledMusic(sums[:, :, :3], counts)).tokens
    torch.testing.assert_close(with_desc, without, atol=0, rtol=0)
    with torch.no_grad():
        desc.descriptor[2].weight.normal_(generator=g)
    assert not torch.allclose(desc(PooledMusic(sums, counts)).tokens, without)


def test_standardisation_folds_into_the_first_layer():
    _, desc = adapter_pair()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, DESCRIPTOR_DIM, generator=g) * 3 + 7
    mean, std = x.mean(0), x.std(0)
    first = desc.descriptor[0]
    expected = first((x - mean) / std)
    desc.standardise_descriptors(mean, std)
    torch.testing.assert_close(first(x), expected, atol=1e-4, rtol=1e-4)


def test_descriptor_dim_validated():
    with pytest.raises(ConfigError, match="descriptor_dim"):
        MusicAdapterConfig(enc_layers=3, enc_dim=64, llm_dim=48, descriptor_dim=DESCRIPTOR_DIM)


def test_model_with_descriptors_starts_as_the_model_without(tmp_path):
    """init_from a checkpoint that predates descriptors: same music tokens at step 0; strict loading refuses it."""
    from mu_llama.errors import CheckpointError
    from mu_llama.llm import load_llm
    from mu_llama.model import MuLlama, MuLlamaConfig
    from mu_llama.recipes.train import load_trainable

    llm, tok = load_llm("random:tiny-llama")
    inner = wide_encoder().inner
    cfg = {"encoder": "random:tiny", "llm": "random:tiny-llama", "injection_layers": 2, "bridge_blocks": 1}
    plain = MuLlama(MuLlamaConfig(**cfg), inner, llm, tok)
    with torch.no_grad():
        for p in plain.trainable_state().values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    saved = plain.save_pretrained(tmp_path / "plain")
    llm2, tok2 = load_llm("random:tiny-llama")
    desc = MuLlama(MuLlamaConfig(**cfg, descriptors=True), inner, llm2, tok2)
    assert isinstance(desc.encoder, DescriptorEncoder)
    with pytest.raises(CheckpointError, match="keys differ"):
        load_trainable(desc, saved)
    fresh = load_trainable(desc, saved, allow_new=True)      # what stays at init: the new MLP, to be standardised
    assert fresh and all(k.startswith("music_adapter.descriptor.") for k in fresh)
    again = desc.save_pretrained(tmp_path / "desc")
    llm3, tok3 = load_llm("random:tiny-llama")
    assert load_trainable(MuLlama(MuLlamaConfig(**cfg, descriptors=True), inner, llm3, tok3), again,
                          allow_new=True) == set()                   # a trained MLP is not standardised again
    rng = np.random.default_rng(0)
    w = [(0.1 * rng.standard_normal(SR)).astype(np.float32)]
    torch.testing.assert_close(desc.encode_music(w).tokens, plain.encode_music(w).tokens, atol=0, rtol=0)
