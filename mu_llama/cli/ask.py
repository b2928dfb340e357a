"""`mu-llama ask AUDIO "question"` or `mu-llama ask AUDIO --interactive` (multi-turn; the audio is encoded once).

Interactive commands: an empty line is ignored, /reset forgets the conversation, /quit (or EOF) leaves.
"""

from __future__ import annotations

import sys

from mu_llama.cli.caption import add_decoding_args, add_model_args, decoding_from_args, load_model_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("ask", help="ask questions about a music file",
                              description="Answer a question about an audio file, or chat about it with --interactive.")
    p.add_argument("audio", help="audio file")
    p.add_argument("question", nargs="?", default=None, help="the question (omit with --interactive)")
    p.add_argument("--interactive", "-i", action="store_true", help="multi-turn conversation on stdin")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mu_llama.errors import ConfigError
    from mu_llama.tasks import Conversation

    if args.question is None and not args.interactive:
        raise ConfigError("give a question, or --interactive for a conversation")
    decoding = decoding_from_args(args)
    model = load_model_from_args(args)
    chat = Conversation(model, args.audio, decoding)
    if args.question is not None:
        print(chat.ask(args.question), flush=True)
    if not args.interactive:
        return 0
    print("ask about the music; /reset to start over, /quit to leave", file=sys.stderr)
    while True:
        try:
            question = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        question = question.strip()
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return 0
        if question == "/reset":
            chat.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        print(f"mu-llama> {chat.ask(question)}", flush=True)
