"""`omnilm generate MODEL --prompt TEXT [--image P] [--audio P] [--video P]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnilm.chat import normalize_conversation
from omnilm.cli.common import add_command, add_engine_flags, add_generation_flags, generation_settings, load_model
from omnilm.errors import OmniError

EXAMPLE = """example:
  omnilm generate runs/quickstart/model --prompt "What shape is this?" --image shape.png
  omnilm generate pkg:qwen2.5-0.5b-instruct --prompt "The capital of France is" --max-new-tokens 8"""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "generate", run, help="answer one prompt, with optional media", epilog=EXAMPLE,
        description="Answer one prompt. Each --image/--audio/--video is attached in order; put <image>, "
        "<audio>, <video> in the prompt to place them, or they are put before the text.")
    parser.add_argument("model", help="checkpoint directory, hub id or pkg: reference")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--audio", action="append", default=[], help="audio file (repeatable)")
    parser.add_argument("--video", action="append", default=[], help="video file (repeatable)")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    add_generation_flags(parser)
    add_engine_flags(parser)


def build_content(
    prompt: str, images: list, audios: list, videos: list, tags=("<image>", "<audio>", "<video>")
) -> list[dict] | str:
    """Content parts: media first (in the order given), then the text — or the prompt itself if it places
    them with the model's placeholder `tags`."""
    if any(tag in prompt for tag in tags):
        return prompt
    parts = [{"type": "image", "image": p} for p in images]
    parts += [{"type": "audio", "audio": p} for p in audios]
    parts += [{"type": "video", "video": p} for p in videos]
    return parts + [{"type": "text", "text": prompt}]


def run(args: argparse.Namespace) -> int:
    for kind in ("image", "audio", "video"):  # fail before the (slow) model load
        for path in getattr(args, kind):
            if not Path(path).is_file():
                raise OmniError(f"--{kind} {path}: no such file")
    gen = generation_settings(args).as_kwargs()
    lm = load_model(args)
    placeholders = lm.processor.layout.placeholders
    content = build_content(args.prompt, args.image, args.audio, args.video, tuple(placeholders.values()))
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = [*system, {"role": "user", "content": content}]
    if isinstance(content, str):  # the prompt places the media with <image>/<audio>/<video>
        messages = normalize_conversation(messages, placeholders, images=args.image,
                                          audios=args.audio, videos=args.video)
    if args.stream:
        for piece in lm.stream(messages, **gen):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(lm.chat(messages, **gen))
    return 0
