"""MERT as a native AudioEncoder: transformers' HubertModel modules, driven by our own batch-safe forward.

Why our own forward instead of HubertModel.forward:
- MERT's conv front-end uses GROUP norm (both released sizes): each channel is normalised over the whole
  time axis, so zero padding in a batch changes every frame. We run the conv stack once per distinct clip
  length (equal lengths share a batch), then pad the conv features.
- Padded frames are zeroed before the positional convolution (kernel 128 frames), so a clip's last frames
  see the same zeros a lone run sees beyond its end; the transformer then runs with a key-padding mask.
- Hidden states follow MERT's remote code as MU-LLaMA ran it (transformers 4.x): index 0 is the embedding
  output, index i the output of layer i, and for pre-LN ("stable") encoders the LAST state has the final
  layer norm applied (= last_hidden_state). transformers 5.x HubertModel returns it un-normalised instead.

Waveforms are normalised as MERT's Wav2Vec2FeatureExtractor does (do_normalize): per clip, over its valid
samples, (x - mean) / sqrt(var + 1e-7), padding left at 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mu_llama.errors import CheckpointError, ConfigError, DependencyError

from .base import AudioEncoder, EncoderOptions, EncoderOutput
from .mert_checkpoint import map_state_dict, read_state_dict, resolve_source, to_mert_layout
from .mert_config import BUILTIN_CONFIGS, MertConfig, builtin_config

if TYPE_CHECKING:  # transformers is imported when a model is built, keeping `import mu_llama.encoders` light
    from transformers import HubertModel

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
RANDOM_PREFIX = "random:"


def normalize_clips(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N): zero-mean unit-variance per row over its first lengths[b] samples; padding set to 0.

    Mean and population variance (numpy's var) in float64 (a window is ~720k samples); output in wave's dtype.
    """
    out = torch.zeros_like(wave)
    for b, n in enumerate(torch.as_tensor(lengths).tolist()):
        if n:
            seg = wave[b, :n]
            var, mean = torch.var_mean(seg.double(), correction=0)
            out[b, :n] = (seg - mean.to(seg.dtype)) * torch.rsqrt(var + NORM_EPS).to(seg.dtype)
    return out


class MertEncoder(AudioEncoder):
    """A frozen MERT (or HuBERT-architecture) encoder. Build with load_mert / build_random / load_encoder."""

    def __init__(self, config: MertConfig, model: HubertModel, *, name: str = "mert"):
        super().__init__()
        _check_hubert(config, model)
        self.config = config
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.sample_rate = config.sample_rate
        self.num_layers = config.num_hidden_layers + 1
        self.hidden_size = config.hidden_size
        self.frame_stride = config.frame_stride
        self.receptive_field = config.receptive_field

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def train(self, mode: bool = True) -> MertEncoder:  # frozen encoder: dropout/SpecAugment never switch on
        return super().train(False)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None, *,
                layers: Sequence[int] | None = None) -> EncoderOutput:
        if wave.dim() != 2:
            raise ValueError(f"wave must be (B, N), got shape {tuple(wave.shape)}")
        B, N = wave.shape
        device, dtype = self.device, self.dtype
        lengths = torch.full((B,), N, dtype=torch.long) if lengths is None else torch.as_tensor(lengths).long().cpu()
        if lengths.shape != (B,) or bool((lengths < 0).any()) or bool((lengths > N).any()):
            raise ValueError(f"lengths must be (B,) = ({B},) with values in [0, {N}], got {lengths.tolist()}")
        selected = self.resolve_layers(layers)
        frames = self.frames_for_lengths(lengths)  # (B,)
        T = int(frames.max()) if B else 0
        D = self.hidden_size
        if T == 0:
            return EncoderOutput(torch.zeros(len(selected), B, 0, D, device=device, dtype=dtype),
                                 torch.zeros(B, 0, dtype=torch.bool, device=device), selected)

        x = wave.to(device=device, dtype=torch.float32)  # (B, N)
        if self.config.do_normalize:
            x = normalize_clips(x, lengths)
        x = x.to(dtype)
        frame_mask = torch.arange(T, device=device)[None, :] < frames.to(device)[:, None]  # (B, T)

        feats = self._conv_features(x, lengths, frames, T)  # (B, T, C)
        hidden = _checked("feature_projection output", self.model.feature_projection(feats), (B, T, D))  # per frame
        keys = None
        if not bool(frame_mask.all()):
            hidden = hidden * frame_mask[..., None].to(dtype)  # zeros where a lone run would see conv zero-padding
            keys = frame_mask.clone()
            keys[frames.to(device) == 0, 0] = True  # a clip with no frames: avoid an all-masked row (NaN in sdpa)
        out = self._encoder_states(hidden, keys, selected)  # (L, B, T, D)
        if keys is not None:
            out *= frame_mask[None, :, :, None].to(dtype)
        return EncoderOutput(out, frame_mask, selected)

    def _encoder_states(self, hidden: torch.Tensor, keys: torch.Tensor | None,
                        selected: tuple[int, ...]) -> torch.Tensor:
        """(B, T, D) embeddings -> (len(selected), B, T, D) hidden states, from ONE call of HubertModel's own encoder.

        keys (B, T) bool marks real frames (None: all real); the encoder zeroes the others and masks them as keys.
        State i < L is what layer i receives (a forward pre-hook): 0 is the embedding after the positional conv (and,
        post-LN, the encoder's layer norm). State L is the encoder's last_hidden_state: for pre-LN ("stable") encoders
        after the final layer norm, as MERT's remote code and transformers 4.x return it.
        """
        enc = self.model.encoder
        L = len(enc.layers)
        keep = {j: pos for pos, j in enumerate(selected)}
        out = hidden.new_empty(len(selected), *hidden.shape)
        calls = [0] * L

        def capture(i: int):
            def hook(module, args, kwargs):
                calls[i] += 1
                if i in keep:
                    h = args[0] if args else kwargs.get("hidden_states")
                    out[keep[i]] = _checked(f"encoder.layers[{i}] input", h, hidden.shape)
            return hook

        handles = [layer.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(enc.layers)]
        try:
            result = enc(hidden, attention_mask=keys)
        finally:
            for handle in handles:
                handle.remove()
        if calls != [1] * L:  # a skipped or repeated layer would leave a state unwritten or stale
            raise DependencyError("transformers", TRANSFORMERS_SUPPORTED, f"HubertModel.encoder ran its {L} layers "
                                  f"{calls} times; MertEncoder expects each layer called once")
        last = result[0] if isinstance(result, tuple) else getattr(result, "last_hidden_state", None)
        last = _checked("encoder output last_hidden_state", last, hidden.shape)
        if L in keep:
            out[keep[L]] = last
        return out

    def _conv_features(self, x: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor, T: int) -> torch.Tensor:
        """(B, N) normalised waveform -> (B, T, C) conv features, each row as if run alone; padded frames are 0."""
        fe = self.model.feature_extractor  # (b, n) -> (b, C, frames_for(n))
        C = self.config.conv_dim[-1]
        need = (T - 1) * self.frame_stride + self.receptive_field  # samples the longest clip's frames use
        if self.config.feat_extract_norm == "layer":
            # Per-frame LayerNorm and unpadded convs: a valid frame never reads past its clip's end, so one batch is exact.
            return _checked("feature_extractor output", fe(x[:, :need]), (x.shape[0], C, T)).transpose(1, 2)
        # Group norm averages each channel over time: padding would leak in. One batch per distinct length.
        out = x.new_zeros(x.shape[0], T, C)
        for n in torch.unique(lengths).tolist():
            rows = torch.nonzero((lengths == n) & (frames > 0)).flatten()
            if len(rows) == 0:
                continue
            t = int(frames[rows[0]])
            rows = rows.to(x.device)
            out[rows, :t] = _checked("feature_extractor output", fe(x[rows, :n]), (len(rows), C, t)).transpose(1, 2)
        return out


# --------------------------------------------------------------------------------- the seam into HubertModel
# MertEncoder drives HubertModel through four public module calls, never by copying their code:
#   feature_extractor: (b, n) waveform -> (b, C, frames) conv features       (called once per distinct clip length)
#   feature_projection: (B, T, C) -> (B, T, D)
#   encoder(hidden (B, T, D), attention_mask=(B, T) bool | None) -> .last_hidden_state (B, T, D)
#   encoder.layers[i]: hidden states (B, T, D) as first argument, read by a forward pre-hook
# The structure is checked at construction and every output's type and shape at each call; anything else is a
# DependencyError naming the transformers version. tests/test_encoders.py holds the parity with HubertModel.forward.
TRANSFORMERS_SUPPORTED = ">=4.57,<6"  # this seam passes its tests on 4.46.3, 4.57.3 and 5.24.0


def _check_hubert(config: MertConfig, model) -> None:
    """Refuse a model that is not laid out as HubertModel (or does not match `config`) before any audio runs."""
    parts = {"feature_extractor": getattr(model, "feature_extractor", None),
             "feature_projection": getattr(model, "feature_projection", None),
             "encoder": getattr(model, "encoder", None)}
    parts["encoder.layers"] = getattr(parts["encoder"], "layers", None)
    missing = [k for k, v in parts.items() if not isinstance(v, torch.nn.Module)]
    if missing:
        raise DependencyError("transformers", TRANSFORMERS_SUPPORTED, f"{type(model).__name__} has no module "
                              f"{', '.join(missing)}; MertEncoder drives HubertModel's feature_extractor, "
                              "feature_projection, encoder and encoder.layers")
    hub = getattr(model, "config", None)
    got = {k: getattr(hub, k, None) for k in ("hidden_size", "do_stable_layer_norm", "feat_extract_norm")}
    want = {"hidden_size": config.hidden_size, "do_stable_layer_norm": config.do_stable_layer_norm,
            "feat_extract_norm": config.feat_extract_norm}
    if got != want or len(parts["encoder.layers"]) != config.num_hidden_layers:
        raise ConfigError(f"the model ({got}, {len(parts['encoder.layers'])} layers) does not match its MertConfig "
                          f"({want}, {config.num_hidden_layers} layers)")


def _checked(what: str, t, shape: tuple[int, ...]) -> torch.Tensor:
    """t, if it is a tensor of `shape`; else a DependencyError (an upstream module returned something else)."""
    if not torch.is_tensor(t) or tuple(t.shape) != tuple(shape):
        kind = f"shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__
        raise DependencyError("transformers", TRANSFORMERS_SUPPORTED, f"HubertModel {what} is {kind}, "
                              f"expected a tensor of shape {tuple(shape)}")
    return t


# ---------------------------------------------------------------------------------------------------- builders


def _hubert_model(config: MertConfig, options: EncoderOptions) -> HubertModel:
    from transformers import HubertModel

    return HubertModel(config.to_hubert(options.attn_implementation))


def _to_options(model: HubertModel, options: EncoderOptions) -> HubertModel:
    options.check_available()
    return model.to(device=options.torch_device, dtype=options.torch_dtype)


def build_random(config_name_or_path: str | Path | MertConfig = "tiny", seed: int = 0,
                 options: EncoderOptions | None = None) -> MertEncoder:
    """A randomly initialised encoder (deterministic in `seed`): "tiny", "mert-95m", "mert-330m", or a config.json path."""
    options = options or EncoderOptions()
    if isinstance(config_name_or_path, MertConfig):
        config, name = config_name_or_path, "custom"
    elif str(config_name_or_path) in BUILTIN_CONFIGS:
        config, name = builtin_config(str(config_name_or_path)), str(config_name_or_path)
    else:
        path = Path(config_name_or_path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"unknown encoder config {str(config_name_or_path)!r}: not a built-in name "
                              f"({', '.join(BUILTIN_CONFIGS)}) nor a config.json file")
        config, name = MertConfig.from_file(path), str(path)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = _hubert_model(config, options)
    finally:
        torch.random.set_rng_state(generator_state)
    return MertEncoder(config, _to_options(model, options), name=f"{RANDOM_PREFIX}{name}")


def load_mert(source: str | Path, options: EncoderOptions | None = None, *, revision: str | None = None) -> MertEncoder:
    """Load MERT-v1-95M / -330M (or a HuBERT-architecture checkpoint) from a local directory or a hub id."""
    options = options or EncoderOptions()
    directory = resolve_source(source, revision=revision)
    config = MertConfig.from_file(directory / "config.json")
    raw, weights_path = read_state_dict(directory)
    with torch.device("meta"):  # no random init of weights we are about to overwrite
        model = _hubert_model(config, options)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = map_state_dict(raw, expected, weights_path)
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise CheckpointError(weights_path, "some tensors were not initialised by the checkpoint")
    return MertEncoder(config, _to_options(model.float(), options), name=str(source))


def save_mert(encoder: MertEncoder, directory: str | Path, *, layout: str = "safetensors",
              extra: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write config.json (MERT field names) + preprocessor_config.json + weights in MERT's hub layout.

    layout "safetensors" -> model.safetensors; "bin" -> pytorch_model.bin (legacy). `extra` adds raw tensors
    (tests use it to mimic pretraining leftovers such as label_embs_concat).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = encoder.config
    (directory / "config.json").write_text(json.dumps(cfg.to_mert_dict(), indent=2) + "\n", encoding="utf-8")
    pre = {"do_normalize": cfg.do_normalize, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
           "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": cfg.sample_rate}
    (directory / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", encoding="utf-8")
    state = to_mert_layout({k: v.float().cpu() for k, v in encoder.model.state_dict().items()})
    state.update({k: v.contiguous() for k, v in (extra or {}).items()})
    if layout == "safetensors":
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    elif layout == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    else:
        raise ConfigError(f"invalid layout {layout!r}; valid choices: safetensors, bin")
    return directory


def load_encoder(spec: str | Path, options: EncoderOptions | None = None, *, seed: int = 0,
                 revision: str | None = None) -> MertEncoder:
    """One entry point for every model spec: "random:NAME_OR_CONFIG" (random weights), a directory, or a hub id."""
    spec_s = str(spec)
    if spec_s.startswith(RANDOM_PREFIX):
        return build_random(spec_s[len(RANDOM_PREFIX):], seed=seed, options=options)
    return load_mert(spec, options, revision=revision)
