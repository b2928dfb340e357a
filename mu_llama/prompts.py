"""Prompt templates: the LLM's own chat template, or MU-LLaMA's Alpaca prompt reproduced exactly.

"mullama-compat": MU-LLaMA formats its Alpaca prompt with `format_map({'instruction': ..., 'input': input})`
where `input` is Python's builtin function, so the Input field holds the literal text
"<built-in function input>" in training and inference. A converted MU-LLaMA checkpoint needs that exact
string; the prompt is tokenized with BOS and without EOS, as its tokenizer.encode(bos=True, eos=False).
Multi-turn (our extension; MU-LLaMA is single-turn): the header once, then for every earlier turn its
Instruction/Input/Response block followed by "\\n" + answer + "\\n\\n", then the current block.

"chat": tokenizer.apply_chat_template with a music-expert system message (SmolLM2, LLaMA-2/3-chat, ...).
"auto": "chat" when the tokenizer has a chat template, else "mullama-compat".
"""

from __future__ import annotations

from collections.abc import Sequence

from mu_llama.errors import ConfigError, choice_error

TEMPLATES = ("auto", "chat", "mullama-compat")

ALPACA_HEADER = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                 "Write a response that appropriately completes the request.\n\n")
MULLAMA_INPUT = str(input)  # "<built-in function input>": what MU-LLaMA's format_map put in the Input field
SYSTEM_PROMPT = ("You are a music expert. You are listening to a piece of music and answer questions about it: "
                 "genre, instruments, mood, tempo, structure.")
CAPTION_QUESTION = "Describe this music in detail."
MULLAMA_CAPTION_QUESTION = "Describe the Audio"  # MU-LLaMA inference.py's default question

Turn = tuple[str, str]  # (question, answer)


def resolve_template(template: str, tokenizer) -> str:
    if template not in TEMPLATES:
        raise choice_error("prompt template", template, TEMPLATES)
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "mullama-compat"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("prompt template 'chat' needs a tokenizer with a chat template; use 'mullama-compat'")
    return template


def alpaca_block(instruction: str) -> str:
    return f"### Instruction:\n{instruction}\n\n### Input:\n{MULLAMA_INPUT}\n\n### Response:"


def mullama_prompt(question: str, history: Sequence[Turn] = ()) -> str:
    """MU-LLaMA's prompt text (single turn: byte-identical to its llama.format_prompt)."""
    past = "".join(f"{alpaca_block(q)}\n{a}\n\n" for q, a in history)
    return ALPACA_HEADER + past + alpaca_block(question)


def chat_messages(question: str, history: Sequence[Turn] = (), system: str | None = SYSTEM_PROMPT) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": question}]


def default_question(template: str) -> str:
    return MULLAMA_CAPTION_QUESTION if template == "mullama-compat" else CAPTION_QUESTION


def build_prompt(template: str, tokenizer, question: str, history: Sequence[Turn] = ()) -> str:
    """The prompt text for one question (template already resolved, or "auto")."""
    template = resolve_template(template, tokenizer)
    if template == "mullama-compat":
        return mullama_prompt(question, history)
    return tokenizer.apply_chat_template(chat_messages(question, history), add_generation_prompt=True, tokenize=False)


def encode_prompt(template: str, tokenizer, question: str, history: Sequence[Turn] = ()) -> list[int]:
    """Token ids of the prompt: BOS + text for mullama-compat; the chat template's own specials otherwise."""
    template = resolve_template(template, tokenizer)
    ids = tokenizer.encode(build_prompt(template, tokenizer, question, history), add_special_tokens=False)
    if template == "mullama-compat" and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def encode_answer(tokenizer, answer: str) -> list[int]:
    """Target ids for training: the answer followed by EOS (what generation stops on)."""
    ids = tokenizer.encode(answer, add_special_tokens=False)
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
