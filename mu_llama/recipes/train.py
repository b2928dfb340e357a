"""Recipe: train the LLM side of a MU-LLaMA model (music adapter, prefix, gates, then LoRA) on the corpus.

    train(TrainConfig(...)) -> Path of the final model directory (MuLlama.from_pretrained loads it)

Steps: read the corpus manifests; cache frozen-encoder features for the train / validation clips (features.py,
resumable); then optimizer steps on examples drawn from the train split:
    stage 1 (steps < stage1_steps):  music adapter + prefix_query + gates; the LLM (and LoRA) frozen
    stage 2 (the next stage2_steps): LoRA (+ bias / norm tuning per model.lora); the adapter frozen
Examples are single-turn prompts in the model's own template (SmolLM2's chat template): a caption under the default
caption question (the clip's most fact-complete caption, so "describe" yields a complete description), a caption
under another description question, or a factual QA pair. Loss is the mean cross-entropy over answer tokens only
(logits are computed for the answer span only: prompts are left-padded, so every answer ends the sequence).

Exact resumption: everything random about an example is derived from (seed, position in the data stream); the trainer
state (JSON) holds the step, the stream position and the torch RNG states (LoRA dropout); the optimizer moments are
safetensors. A run killed at any point and rerun with the same config continues from its last checkpoint and ends
with the same weights as an uninterrupted run. Nothing is pickled.

Run folder (config.out):
    checkpoints/step-000050/  config.json, adapter.safetensors, adapter_model.safetensors (+ adapter_config.json),
                              optimizer.safetensors, trainer_state.json
    final/                    the trained model (save_pretrained layout)
    log.jsonl (per step and per evaluation), evals/step-000050.json, curves.png, train_config.json
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mu_llama.adapters import PooledMusic
from mu_llama.errors import CheckpointError, ConfigError
from mu_llama.prompts import CAPTION_QUESTION, encode_answer, encode_prompt
from mu_llama.recipes.features import FeatureCache, open_cache
from mu_llama.recipes.train_config import TrainConfig

# Description questions captions are asked under (MusicQA's four, verbatim, plus common variants).
DESCRIPTION_QUESTIONS = (
    "Describe the audio", "Describe the audio in detail", "What do you hear in the audio",
    "What can be inferred from the audio", "Describe this music.", "What does this piece sound like?",
    "Give a short description of this recording.", "Can you describe what is playing?",
)
CAPTION_FACTS = ("family", "mode", "key", "meter", "tempo_class", "texture")
STATE_FILE, OPTIM_FILE = "trainer_state.json", "optimizer.safetensors"
# TrainConfig fields that may change between a run and its resumption (they do not change the weights)
RUNTIME_FIELDS = ("stop_after", "progress", "threads", "checkpoint_every", "keep_checkpoints", "val_examples",
                  "val_generate", "val_qa", "gen_max_new_tokens", "encode_batch_size", "shard_size", "feature_cache")


# ================================================================================================ corpus -> examples
@dataclass(frozen=True)
class AnnotatedClip:
    """A corpus clip with its captions and question-answer pairs: one row of a training or validation split."""

    id: str
    audio: Path
    captions: tuple[str, ...]
    qa: tuple[tuple[str, str, str], ...]  # (question, answer, kind)
    best_caption: str  # target of the default caption question: the most fact-complete caption (+ missing facts)


@dataclass(frozen=True)
class Example:
    clip: str
    question: str
    answer: str
    kind: str  # "caption" | "description" | a QA kind


def corpus_dirs(corpus: str | Path) -> tuple[Path, Path]:
    """(manifest folder, audio root): `corpus/manifests/<split>.jsonl` as the builder writes it, or a plain folder."""
    corpus = Path(corpus)
    if (corpus / "manifests").is_dir():
        return corpus / "manifests", corpus
    if corpus.is_dir():
        return corpus, corpus
    raise ConfigError(f"{corpus}: corpus folder not found (expected manifests/<split>.jsonl inside)")


def read_rows(corpus: str | Path, split: str) -> list[dict]:
    """Manifest rows of a split, sorted by id. A corpus still being built (clips/ but no manifests yet) is read from
    its finished clip records, so training can start on a growing corpus (the run snapshots the ids it uses)."""
    from mu_llama.eval.data import read_jsonl

    corpus = Path(corpus)
    if not (corpus / "manifests").is_dir() and (corpus / "clips").is_dir():
        from mu_llama.corpus.build import finished_records

        return [r for r in finished_records(corpus) if r.get("split") == split]
    manifests, _ = corpus_dirs(corpus)
    path = manifests / f"{split}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no manifest for split {split!r}")
    return sorted((row for _, row in read_jsonl(path)), key=lambda r: str(r["id"]))


FAMILY_WORDS = {"keyboard": "a keyboard instrument", "mallet percussion": "mallet percussion", "organ": "an organ",
                "guitar": "a guitar", "bass": "a bass guitar", "strings": "strings", "voice": "voices",
                "brass": "brass", "woodwind": "woodwinds", "synth": "a synthesizer", "drums": "drums"}


def _stated(parsed, fact: str) -> bool:
    return bool(parsed.families) if fact == "family" else parsed.get(fact) is not None


def best_caption(captions: Sequence[str]) -> str:
    """The caption that states the most caption facts (as mu_llama.eval parses them); ties go to the shorter one."""
    from mu_llama.eval.facts_parse import parse_facts

    return max(captions, key=lambda c: (sum(_stated(parse_facts(c), f) for f in CAPTION_FACTS), -len(c)))


def complete_caption(caption: str, facts: dict | None) -> str:
    """`caption` + one short sentence per caption fact (family, key/mode, meter, tempo class, texture) that it does
    not state, taken from the clip's fact sheet: the target of the default caption question, so that a detailed
    description always covers them. Sentences use wording mu_llama.eval parses back."""
    from mu_llama.eval.facts_parse import parse_facts

    if not facts:
        return caption
    parsed = parse_facts(caption)
    extra = []
    family = (facts.get("families") or [None])[0]
    if not parsed.families and family in FAMILY_WORDS:
        extra.append(f"It is played by {FAMILY_WORDS[family]}.")
    if parsed.get("key") is None and parsed.get("mode") is None and facts.get("key_tonic") and facts.get("mode"):
        extra.append(f"It is in the key of {facts['key_tonic']} {facts['mode']}.")
    if parsed.get("meter") is None and facts.get("meter") not in (None, "other"):
        extra.append(f"It is in {facts['meter']} time.")
    if parsed.get("tempo_class") is None and facts.get("tempo_class"):
        extra.append(f"The tempo is {facts['tempo_class']}.")
    if parsed.get("texture") is None and facts.get("texture"):
        extra.append(f"It has a {facts['texture']} texture.")
    return " ".join([caption.rstrip(), *extra]) if extra else caption


def caption_target(captions: Sequence[str], facts: dict | None, complete: bool = True) -> str:
    """Target of the default caption question. complete: the shortest caption once completed with the facts it omits
    (every caption fact stated, ~60 SmolLM2 tokens instead of ~100 for the longest caption); else best_caption."""
    if complete and facts:
        return min((complete_caption(c, facts) for c in captions), key=lambda c: (len(c), c))
    return best_caption(captions)


def clips_from_rows(rows: Sequence[dict], root: Path, complete: bool = True) -> list[AnnotatedClip]:
    clips = []
    for row in rows:
        caps = tuple(row.get("captions") or ())
        if not caps:
            continue
        qa = tuple((q["question"], q["answer"], q.get("kind", "")) for q in row.get("qa") or ())
        audio = Path(row["audio"])
        best = caption_target(caps, row.get("facts"), complete)
        clips.append(AnnotatedClip(str(row["id"]), audio if audio.is_absolute() else root / audio, caps, qa, best))
    return sorted(clips, key=lambda c: c.id)


def read_clips(corpus: str | Path, split: str, limit: int | None = None, ids: Sequence[str] | None = None,
               complete: bool = True) -> list[AnnotatedClip]:
    """The split's clips that have captions, sorted by id (only `ids` when given; then all must exist)."""
    rows = read_rows(corpus, split)
    if ids is not None:
        want = set(ids)
        rows = [r for r in rows if str(r["id"]) in want]
        if len(rows) != len(want):
            raise ConfigError(f"{corpus}: {len(want) - len(rows)} clip(s) of this run's {split} snapshot are gone")
    clips = clips_from_rows(rows, corpus_dirs(corpus)[1], complete)
    if not clips:
        raise ConfigError(f"{corpus}: no clips with captions in split {split!r}")
    if limit and limit < len(clips):  # evenly spaced over the sorted ids: every kind / collection stays represented
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, limit).round().astype(int)]
    return clips


class ExampleStream:
    """Position p -> Example, deterministic in (seed, p): epoch e = p // n visits the clips in permutation e."""

    def __init__(self, clips: Sequence[AnnotatedClip], seed: int, caption_share: float, description_share: float):
        self.clips, self.seed = list(clips), seed
        self.caption_share, self.description_share = caption_share, description_share
        self._perm: tuple[int, np.ndarray] | None = None

    def __getitem__(self, p: int) -> Example:
        n = len(self.clips)
        epoch = p // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(n))
        clip = self.clips[int(self._perm[1][p % n])]
        rng = np.random.default_rng([self.seed, 1, p])
        u = rng.random()
        factual = [q for q in clip.qa if q[2] != "description"]
        if u < self.caption_share:
            return Example(clip.id, CAPTION_QUESTION, clip.best_caption, "caption")
        if u < self.caption_share + self.description_share or not factual:
            q = DESCRIPTION_QUESTIONS[int(rng.integers(len(DESCRIPTION_QUESTIONS)))]
            return Example(clip.id, q, clip.captions[int(rng.integers(len(clip.captions)))], "description")
        q, a, kind = factual[int(rng.integers(len(factual)))]
        return Example(clip.id, q, a, kind)

    def take(self, start: int, count: int) -> list[Example]:
        return [self[p] for p in range(start, start + count)]


# ================================================================================================ batches and loss
@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S) left-padded prompt + answer
    attention_mask: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, A) answer ids of the last A positions, -100 where a row's answer is shorter
    pooled: PooledMusic  # (B, W, L, D)

    @property
    def tokens(self) -> int:
        return int((self.labels != -100).sum())


def collate(model, examples: Sequence[Example], features: dict[str, PooledMusic], max_answer_tokens: int) -> Batch:
    tok = model.tokenizer
    rows, answers = [], []
    for ex in examples:
        prompt = encode_prompt(model.template, tok, ex.question)
        answer = encode_answer(tok, ex.answer)[:max_answer_tokens]
        rows.append(prompt + answer)
        answers.append(answer)
    width, a_width = max(len(r) for r in rows), max(len(a) for a in answers)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), a_width), -100, dtype=torch.long)
    for i, (r, a) in enumerate(zip(rows, answers)):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
        labels[i, a_width - len(a):] = torch.tensor(a)
    pooled = PooledMusic.stack([features[ex.clip] for ex in examples])
    return Batch(ids, mask, labels, pooled)


def autocast_for(config: TrainConfig, device: torch.device):
    amp = config.amp
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def batch_loss_sum(model, batch: Batch, amp=nullcontext) -> torch.Tensor:
    """Summed cross-entropy over the batch's answer tokens (logits only for the answer span)."""
    dev = model.device
    a = batch.labels.shape[1]
    with amp():
        music = model.music_tokens(batch.pooled)
        out = model(batch.input_ids.to(dev), batch.attention_mask.to(dev), music, logits_to_keep=a + 1)
    logits = out.logits[:, :-1].float()  # (B, A, V): position t predicts token t + 1
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.to(dev).reshape(-1),
                           ignore_index=-100, reduction="sum")


# ================================================================================================ model + parameters
def build_model(config: TrainConfig):
    from mu_llama.llm import LLMOptions
    from mu_llama.model import MuLlama

    options = LLMOptions(device=config.device, quantize=config.quantize)
    model = MuLlama.build(config.model_config(), options)
    # master copies of everything trainable in float32 (the base may be bf16 on CUDA or 4-bit with QLoRA)
    for p in named_parameters(model).values():
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def named_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Every parameter a stage can train, under stable names: music_adapter.*, injection.*, llm.<canonical> (LoRA,
    bias, norm). Base weights of the LLM are excluded (never trained)."""
    from mu_llama.adapters import canonical_name
    from mu_llama.adapters.lora import finetune_names

    out = {f"music_adapter.{n}": p for n, p in model.music_adapter.named_parameters()}
    out.update({f"injection.{n}": p for n, p in model.injection.named_parameters()})
    lora = model.config.lora
    tunable = set(finetune_names(model.llm, lora)) if lora is not None else set()
    for n, p in model.llm.named_parameters():
        c = canonical_name(n)
        if ".lora_" in c or c in tunable:
            out[f"llm.{c}"] = p
    return out


def stage_parameters(model, stage: int) -> dict[str, torch.nn.Parameter]:
    """requires_grad for stage 1 / 2; returns {name: parameter} of the trainable ones, sorted by name."""
    model.set_stage("pretrain" if stage == 1 else "finetune")
    return {n: p for n, p in sorted(named_parameters(model).items()) if p.requires_grad}


def make_optimizer(config: TrainConfig, params: dict[str, torch.nn.Parameter]) -> torch.optim.AdamW:
    decay = [p for n, p in params.items() if p.dim() >= 2 and not n.endswith("prefix_query")]
    no_decay = [p for n, p in params.items() if not (p.dim() >= 2 and not n.endswith("prefix_query"))]
    groups = [g for g in ({"params": decay, "weight_decay": config.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr1, betas=(0.9, 0.95), eps=1e-8)


# ================================================================================================ checkpoints
def _rng_state() -> dict:
    state = {"torch": base64.b64encode(torch.random.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                                      for s in state["cuda"]])


def _weights_config(config: TrainConfig) -> dict:
    d = config.to_dict()
    for k in RUNTIME_FIELDS:
        d.pop(k, None)
    return d


def save_checkpoint(model, optimizer, params: dict, directory: Path, state: dict) -> Path:
    """Atomic: written to a temporary sibling, then renamed into place."""
    from safetensors.torch import save_file

    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    opt = optimizer.state_dict()  # state / param_groups index parameters in the optimizer's group order
    names = _optimizer_names(optimizer, params)
    tensors = {}
    for i, name in enumerate(names):
        for k, v in opt["state"].get(i, {}).items():
            tensors[f"{name}/{k}"] = v.detach().float().cpu().contiguous().reshape(v.shape)
    save_file(tensors, str(tmp / OPTIM_FILE), metadata={"format": "pt"})
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [names[i] for i in g["params"]]}
              for g in opt["param_groups"]]
    body = {**state, "optimizer": {"param_groups": groups}, "rng": _rng_state()}
    (tmp / STATE_FILE).write_text(json.dumps(body, indent=1) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


NEW_PARTS = ("music_adapter.descriptor.",)   # may be absent from an init_from checkpoint (they start as no-ops)


def load_trainable(model, directory: Path, *, allow_new: bool = False) -> set[str]:
    """Copy a checkpoint's adapter / bias / norm / LoRA tensors into the model (strict: keys and shapes must match;
    allow_new: the model may have parts the checkpoint predates, NEW_PARTS, which keep their fresh init).
    Returns the keys left at their fresh init (empty unless allow_new)."""
    from safetensors.torch import load_file

    path = directory / "adapter.safetensors"
    if not path.is_file():
        raise CheckpointError(path, "missing: not a checkpoint")
    saved, target = load_file(str(path)), model.trainable_state()
    expected = {k for k in target if not (allow_new and k.startswith(NEW_PARTS) and k not in saved)}
    if set(saved) != expected:
        raise CheckpointError(path, f"keys differ from the model's ({len(set(saved) ^ expected)} mismatched)")
    with torch.no_grad():
        for k, v in saved.items():
            target[k].copy_(v)
        if model.config.lora is not None:
            from peft import set_peft_model_state_dict

            from mu_llama.adapters import lora_state_dict

            lpath = directory / "adapter_model.safetensors"
            lora = load_file(str(lpath))
            if set(lora) != set(lora_state_dict(model.llm)):
                raise CheckpointError(lpath, "LoRA keys differ from the model's")
            set_peft_model_state_dict(model.llm, lora)
    return set(target) - set(saved)


def load_optimizer(optimizer, params: dict, directory: Path, state: dict) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / OPTIM_FILE))
    names = _optimizer_names(optimizer, params)
    groups = state["optimizer"]["param_groups"]
    if [n for g in groups for n in g["params"]] != names:
        raise CheckpointError(directory / STATE_FILE, "optimizer parameters differ from this run's trainable set")
    opt_state = {}
    for i, name in enumerate(names):
        entry = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name}
        if entry:
            opt_state[i] = entry
    param_groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [names.index(n) for n in g["params"]]}
                    for g in groups]
    optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})


def _optimizer_names(optimizer, params: dict) -> list[str]:
    """Parameter names in the optimizer's own order (group by group), the indices its state_dict uses."""
    by_id = {id(p): n for n, p in params.items()}
    return [by_id[id(p)] for g in optimizer.param_groups for p in g["params"]]


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"))
    found = [d for d in found if (d / STATE_FILE).is_file()]
    return found[-1] if found else None


# ================================================================================================ evaluation
def predict(model, clips: Sequence[AnnotatedClip], features: dict[str, PooledMusic], *, qa: str = "factual",
            batch_size: int = 8, max_new_tokens: int = 112, fact_fusion: float = 1.0,
            progress: bool = False) -> list[dict]:
    """Greedy caption (default caption question) + answers to the clips' questions -> prediction rows.
    qa: "none", "facts" (questions whose kind the harness scores as a fact), "factual" (every non-description
    question) or "all". fact_fusion: DecodingOptions.fact_fusion (used when the model has a fact tagger, which then
    reads each clip's audio file)."""
    from tqdm import tqdm

    from mu_llama.audio import load_audio
    from mu_llama.decoding import DecodingOptions
    from mu_llama.eval.facts_score import QA_KIND_TO_FACT

    options = DecodingOptions(max_new_tokens=max_new_tokens, fact_fusion=fact_fusion)
    tags = None
    if model.tagger is not None and options.fact_fusion:       # tag each clip once
        tags = {c.id: model.tagger.tag_waves([load_audio(c.audio, sample_rate=model.sample_rate)], model.sample_rate)
                for c in tqdm(clips, desc="tag", disable=not progress)}

    def wanted(kind: str) -> bool:
        return qa == "all" or (qa == "factual" and kind != "description") or (qa == "facts" and kind in QA_KIND_TO_FACT)

    jobs = [(c.id, CAPTION_QUESTION) for c in clips] + [(c.id, q) for c in clips for q, _, kind in c.qa if wanted(kind)]
    # similar prompt lengths together: less padding; results are keyed, so the order does not matter
    tok = model.tokenizer
    encoded = {q: encode_prompt(model.template, tok, q) for q in {q for _, q in jobs}}
    jobs.sort(key=lambda j: (len(encoded[j[1]]), j[1], j[0]))
    rows: dict[str, dict] = {c.id: {"id": c.id, "answers": {}} for c in clips}
    was_training = model.training
    model.eval()
    with tqdm(total=len(jobs), desc="generate", unit="answer", disable=not progress) as bar, torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            music = model.music_tokens(PooledMusic.stack([features[cid] for cid, _ in chunk]))
            fusion = None
            if tags is not None:
                probs = {f: np.concatenate([tags[cid][f] for cid, _ in chunk]) for f in tags[chunk[0][0]]}
                fusion = model.fact_fusion(options=options, probs=probs)
            outs = model.generate(music, [encoded[q] for _, q in chunk], options, fusion=fusion)
            for (cid, q), ids in zip(chunk, outs):
                text = tok.decode(ids, skip_special_tokens=True).strip()
                if q == CAPTION_QUESTION:
                    rows[cid]["caption"] = text
                else:
                    rows[cid]["answers"][q] = text
            bar.update(len(chunk))
    model.train(was_training)
    return [rows[c.id] for c in clips]


def summarize(report) -> dict:
    """Headline figures of an EvalReport: caption BLEU-4 / METEOR / ROUGE-L / CIDEr-D and fact accuracies."""
    out: dict = {}
    for task, scores in report.scores.items():
        for k in ("bleu_4", "meteor", "rouge_l", "cider_d", "sentence_cosine", "bertscore_f"):
            if k in scores:
                out[f"{task}_{k}"] = round(float(scores[k]), 4)
    for task, tally in report.facts.items():
        for fact, d in tally["facts"].items():
            out[f"{task}_acc_{fact}"] = round(d["accuracy"], 4)
        if tally["overall"]["accuracy"] is not None:
            out[f"{task}_acc_overall"] = round(tally["overall"]["accuracy"], 4)
    return out


@torch.no_grad()
def validation_loss(model, examples: Sequence[Example], features, config: TrainConfig) -> float | None:
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    amp = lambda: autocast_for(config, model.device)  # noqa: E731
    for start in range(0, len(examples), config.batch_size):
        batch = collate(model, examples[start:start + config.batch_size], features, config.max_answer_tokens)
        total += float(batch_loss_sum(model, batch, amp))
        tokens += batch.tokens
    model.train(was_training)
    return total / max(tokens, 1)


def run_eval(model, config: TrainConfig, val_clips: Sequence[AnnotatedClip], val_examples: Sequence[Example], features,
             corpus_refs) -> dict:
    """Validation loss + greedy generations on a few validation clips scored with mu_llama.eval."""
    from mu_llama.eval import evaluate

    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # evaluation never shifts the training RNG
        result: dict = {"val_loss": validation_loss(model, val_examples, features, config)}
        sample = list(val_clips[:config.val_generate])
        if sample:
            preds = predict(model, sample, features, qa=config.val_qa, batch_size=config.batch_size,
                            max_new_tokens=config.gen_max_new_tokens)
            refs = [r for r in corpus_refs if r.id in {c.id for c in sample}]
            report = evaluate(preds, refs, metrics=("bleu", "meteor", "rouge_l", "cider_d", "facts"))
            result.update(summarize(report))
            result["samples"] = [{"id": p["id"], "caption": p.get("caption")} for p in preds[:4]]
    return result


def plot_curves(history: list[dict], evals: list[dict], stage1_steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    loss = [h["loss"] for h in history]
    ema, smooth = [], None
    for v in loss:
        smooth = v if smooth is None else 0.9 * smooth + 0.1 * v
        ema.append(smooth)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, color="0.75", lw=0.8, label="train loss (step)")
    ax.plot(steps, ema, color="C0", lw=1.5, label="train loss (EMA 0.9)")
    ev = [e for e in evals if e.get("val_loss") is not None]
    if ev:
        ax.plot([e["step"] for e in ev], [e["val_loss"] for e in ev], "o-", color="C3", label="validation loss")
    if 0 < stage1_steps < steps[-1] + 1:
        ax.axvline(stage1_steps, color="0.4", ls="--", lw=0.8)
        ax.text(stage1_steps, ax.get_ylim()[1], " stage 2", va="top", fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per answer token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================================ the recipe
def standardise_descriptors(model, pooled: Sequence[PooledMusic]) -> None:
    """Fold the training clips' per-channel mean / std of the descriptor means into the adapter's descriptor MLP."""
    k = model.music_adapter.config.descriptor_dim
    x = torch.cat([p.means()[..., -1, :k].reshape(-1, k) for p in pooled]).float()    # (clips x windows, K)
    model.music_adapter.standardise_descriptors(x.mean(0), x.std(0))


def prepare_features(model, config: TrainConfig, clips: Sequence[AnnotatedClip]) -> tuple[FeatureCache, dict]:
    cache = open_cache(model, config.feature_dir)
    cache.build(model, [(c.id, c.audio) for c in clips], batch_size=config.encode_batch_size,
                shard_size=config.shard_size, progress=config.progress)
    return cache, cache.load([c.id for c in clips])


def _snapshot_clips(config: TrainConfig, out: Path) -> tuple[list[AnnotatedClip], list[AnnotatedClip]]:
    """The run's train / validation clips, fixed at its first start (clips.json) so that resuming on a corpus that
    has grown since (a build still running) sees the same data stream."""
    path = out / "clips.json"
    if path.is_file():
        ids = json.loads(path.read_text())
        return (read_clips(config.corpus, config.train_split, ids=ids["train"], complete=config.complete_captions),
                read_clips(config.corpus, config.val_split, ids=ids["validation"], complete=config.complete_captions))
    train_clips = read_clips(config.corpus, config.train_split, config.max_train_clips, complete=config.complete_captions)
    val_clips = read_clips(config.corpus, config.val_split, complete=config.complete_captions)
    path.write_text(json.dumps({"train": [c.id for c in train_clips], "validation": [c.id for c in val_clips]}) + "\n")
    return train_clips, val_clips


def _log(out: Path, record: dict) -> None:
    with (out / "log.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, *, cache_only: bool = False) -> Path:
    """Run (or resume) the recipe; returns <out>/final (or the feature cache folder with cache_only)."""
    from tqdm import tqdm

    from mu_llama.eval import Reference

    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    saved_cfg = out / "train_config.json"
    if saved_cfg.is_file() and latest_checkpoint(out) is not None:
        old = json.loads(saved_cfg.read_text())
        for k in RUNTIME_FIELDS:
            old.pop(k, None)
        if old != _weights_config(config):
            diff = sorted(k for k in set(old) | set(_weights_config(config))
                          if old.get(k) != _weights_config(config).get(k))
            raise ConfigError(f"{out}: holds a run with other options ({', '.join(diff)}); use a new --out")
    saved_cfg.write_text(json.dumps(config.to_dict(), indent=1) + "\n")

    train_clips, val_clips = _snapshot_clips(config, out)
    torch.manual_seed(config.seed)
    model = build_model(config)
    stream = ExampleStream(train_clips, config.seed, config.caption_share, config.description_share)
    val_examples = ExampleStream(val_clips, config.seed + 1, config.caption_share,
                                 config.description_share).take(0, config.val_examples)
    # the data stream is known in advance: encode only the clips this run will visit (all of them once it passes
    # an epoch), plus the validation clips it evaluates on
    total = config.total_steps * config.batch_size * config.grad_accum
    visited = {c.id for c in train_clips} if total >= len(train_clips) else {stream[p].clip for p in range(total)}
    visited |= {e.clip for e in val_examples} | {c.id for c in val_clips[:config.val_generate]}
    cache, features = prepare_features(model, config, [c for c in train_clips + val_clips if c.id in visited])
    if cache_only:
        return cache.dir
    val_ids = {c.id for c in val_clips}
    val_refs = [Reference.from_dict(r) for r in read_rows(config.corpus, config.val_split) if str(r["id"]) in val_ids]

    # --- fresh start or resume -------------------------------------------------------------------
    step, position, history, evals = 0, 0, [], []
    ckpt = latest_checkpoint(out)
    fresh = set(model.trainable_state()) if ckpt is None else set()   # parts still at their initial values
    if ckpt is None and config.init_from:
        fresh = load_trainable(model, Path(config.init_from), allow_new=True)
    if "music_adapter.descriptor.0.weight" in fresh:      # a new descriptor MLP (not one trained already)
        standardise_descriptors(model, [features[c.id] for c in train_clips if c.id in features])
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        step, position, history, evals = state["step"], state["position"], state["history"], state["evals"]
        load_trainable(model, ckpt)
    if step >= config.total_steps:
        return _finish(model, config, out, history, evals)
    stage = config.stage_at(step)
    params = stage_parameters(model, stage)
    optimizer = make_optimizer(config, params)
    if ckpt is not None:
        if state["stage"] == stage:
            load_optimizer(optimizer, params, ckpt, state)
        _set_rng_state(state["rng"])
        print(f"resumed from {ckpt} at step {step}", flush=True)

    model.train()
    amp = lambda: autocast_for(config, model.device)  # noqa: E731
    per_step = config.batch_size * config.grad_accum
    bar = tqdm(total=config.total_steps, initial=step, desc=f"train (stage {stage})", unit="step",
               disable=not config.progress)
    t_start = time.time()
    try:
        while step < config.total_steps:
            if config.stage_at(step) != stage:  # stage boundary: new trainable set, new optimizer
                stage = config.stage_at(step)
                params = stage_parameters(model, stage)
                optimizer = make_optimizer(config, params)
                bar.set_description(f"train (stage {stage})")
            lr = config.lr_at(step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            # similar lengths share a micro-batch (less padding); the step's loss does not depend on the split
            examples = sorted(stream.take(position, per_step), key=lambda e: len(e.question) + len(e.answer))
            batches = [collate(model, examples[i:i + config.batch_size], features, config.max_answer_tokens)
                       for i in range(0, per_step, config.batch_size)]
            n_tokens = sum(b.tokens for b in batches)
            total = 0.0
            for b in batches:  # gradient accumulation: the mean over all answer tokens of the whole step
                loss = batch_loss_sum(model, b, amp) / n_tokens
                loss.backward()
                total += loss.item()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(params.values()), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            position += per_step
            record = {"step": step, "stage": stage, "loss": round(total, 5), "lr": lr, "tokens": n_tokens,
                      "seconds": round(time.time() - t_start, 2)}
            history.append(record)
            _log(out, record)
            bar.set_postfix(loss=f"{total:.3f}", lr=f"{lr:.2e}")
            bar.update(1)
            last = step == config.total_steps
            if step % config.checkpoint_every == 0 or last or step == config.stop_after:
                ev = {"step": step, **run_eval(model, config, val_clips, val_examples, features, val_refs)}
                evals.append(ev)
                _log(out, {"eval": ev})
                (out / "evals").mkdir(exist_ok=True)
                (out / "evals" / f"step-{step:06d}.json").write_text(json.dumps(ev, indent=1) + "\n")
                state = {"step": step, "stage": stage, "position": position, "history": history, "evals": evals,
                         "config": config.to_dict()}
                save_checkpoint(model, optimizer, params, out / "checkpoints" / f"step-{step:06d}", state)
                _prune(out, config.keep_checkpoints)
                plot_curves(history, evals, config.stage1_steps, out / "curves.png")
                tqdm.write(f"step {step}: " + ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("samples", "step")))
            if config.stop_after is not None and step >= config.stop_after and not last:
                bar.close()
                print(f"stopped after step {step} (stop_after); rerun to resume", flush=True)
                return out / "checkpoints" / f"step-{step:06d}"
    finally:
        bar.close()
    return _finish(model, config, out, history, evals)


def _prune(out: Path, keep: int) -> None:
    found = sorted((out / "checkpoints").glob("step-*"))
    for d in found[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def _finish(model, config: TrainConfig, out: Path, history: list, evals: list) -> Path:
    final = out / "final"
    tmp = out / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    summary = {"steps": config.total_steps, "train_seconds": history[-1]["seconds"] if history else None,
               "last_eval": evals[-1] if evals else None}
    (tmp / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    plot_curves(history, evals, config.stage1_steps, out / "curves.png")
    return final


# ================================================================================================ export / loading
def export_model(run_dir: str | Path, dest: str | Path, encoder_dir: str | Path | None = None) -> Path:
    """Copy a trained model (save_pretrained folder, with its fact tagger if it has one) to `dest` (a tagger already
    in `dest` stays when the run has none); with encoder_dir, copy the encoder into dest/encoder
    and make config.json refer to it as "encoder" (a path relative to the model folder, which
    MuLlama.from_pretrained resolves)."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(run_dir, "not a model folder (no config.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "adapter.safetensors", "adapter_model.safetensors", "adapter_config.json",
                 "fact_tagger.json", "fact_tagger.safetensors"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if encoder_dir is not None:
        enc = Path(encoder_dir)
        if enc.resolve() != (dest / "encoder").resolve():
            shutil.copytree(enc, dest / "encoder", dirs_exist_ok=True)
        body = json.loads((dest / "config.json").read_text())
        body["config"]["encoder"] = "encoder"
        (dest / "config.json").write_text(json.dumps(body, indent=2) + "\n")
    return dest


def predict_split(model_dir: str | Path, corpus: str | Path, split: str, out_path: str | Path, *,
                  qa: str = "facts", limit: int | None = None, batch_size: int = 8, max_new_tokens: int = 112,
                  feature_cache: str | Path | None = None, device: str = "cpu", progress: bool = True,
                  refs_out: str | Path | None = None, shard: tuple[int, int] = (0, 1),
                  fact_fusion: float = 1.0) -> Path:
    """Predictions JSONL for `mu-llama eval --pred`: a caption (+ answers) per clip of a corpus split, from cached
    encoder features (the cache is filled for the split first; resumable). shard=(k, n) predicts clips k, k+n, ...
    only (n processes share a CPU; fill the cache once with shard (0, 1) and qa="none" first, or the writers race)."""
    from mu_llama.eval.data import Prediction, write_predictions
    from mu_llama.llm import LLMOptions, cache_dir
    from mu_llama.model import MuLlama

    model = MuLlama.from_pretrained(model_dir, LLMOptions(device=device))
    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"invalid shard {k}/{n}: need 0 <= K < N")
    clips = read_clips(corpus, split, limit)
    # default: the user cache, never beside the model (a bundled model's parent is the installed package's assets)
    root = Path(feature_cache) if feature_cache else cache_dir() / "features"
    cache = open_cache(model, root)
    if n == 1:
        cache.build(model, [(c.id, c.audio) for c in clips], batch_size=batch_size, progress=progress)
    clips = clips[k::n]
    rows = predict(model, clips, cache.load([c.id for c in clips]), qa=qa, batch_size=batch_size,
                   max_new_tokens=max_new_tokens, fact_fusion=fact_fusion, progress=progress)
    if refs_out is not None:
        snapshot_corpus(corpus, refs_out, {split: {c.id for c in clips}, "train": None})
    return write_predictions([Prediction.from_dict(r) for r in rows], out_path)


def snapshot_corpus(corpus: str | Path, out_dir: str | Path, splits: dict[str, set[str] | None]) -> Path:
    """Write <out_dir>/<split>.jsonl manifest rows (only the given ids; None = the whole split): a fixed reference set
    for `mu-llama eval --corpus out_dir` (and its baselines, which learn from the train split), e.g. while the
    corpus is still being built."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        rows = [r for r in read_rows(corpus, split) if ids is None or str(r["id"]) in ids]
        (out_dir / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out_dir


__all__ = ["AnnotatedClip", "Example", "ExampleStream", "TrainConfig", "build_model", "collate",
           "export_model", "predict", "predict_split", "read_clips", "stage_parameters", "train"]
