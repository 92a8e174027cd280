"""`omnilm chat MODEL`: an interactive terminal chat with streaming answers and media commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnilm.cli.common import add_command, add_engine_flags, add_generation_flags, generation_settings, load_model
from omnilm.errors import OmniError
from omnilm.speech.sentences import SentenceSplitter

EXAMPLE = """example:
  omnilm chat runs/quickstart/model
  > /image shape.png
  > What colour is the shape?

  omnilm chat runs/quickstart/model --speak --voice nova     # replies spoken aloud, sentence by sentence
  omnilm chat runs/quickstart/model --speak-dir replies/     # … or written as replies/reply-000-00.wav, …

commands: /image P, /audio P, /video P attach media to the next message; /reset clears the
conversation; /help lists the commands; /quit (or Ctrl-D) leaves."""

HELP = "commands: /image PATH, /audio PATH, /video PATH, /reset, /help, /quit"


def register(subparsers) -> None:
    parser = add_command(subparsers, "chat", run, help="chat in the terminal", epilog=EXAMPLE,
                         description="Chat with a model in the terminal; answers stream as they are generated.")
    parser.add_argument("model", help="checkpoint directory, hub id or pkg: reference")
    parser.add_argument("--system", default=None, help="system prompt")
    voice = parser.add_argument_group("spoken replies (espeak-ng)")
    voice.add_argument("--speak", action="store_true",
                       help="speak each reply with the first audio player found (paplay, aplay, ffplay, afplay); "
                            "without one, write WAV files to ./omnilm-speech")
    voice.add_argument("--speak-dir", default=None, metavar="DIR", help="write each spoken sentence as a WAV in DIR")
    voice.add_argument("--voice", default="alloy", help="OpenAI voice name or espeak-ng voice (default alloy)")
    add_generation_flags(parser)
    add_engine_flags(parser)


def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    gen = generation_settings(args).as_kwargs()
    speaker = _speaker(args)  # a missing engine or unknown voice fails before the model loads
    lm = load_model(args)
    session = ChatSession(lm, system=args.system, gen=gen, speaker=speaker)
    stdout.write(f"omnilm chat · {lm.name} · takes text{''.join(', ' + m for m in lm.modalities)}\n{HELP}\n")
    if speaker is not None:
        where = f"written to {speaker.out_dir}/" if speaker.out_dir is not None else f"played by {speaker.player[0]}"
        stdout.write(f"replies are spoken ({args.voice}), {where}\n")
    try:
        while True:
            line = _read_line(session.prompt(), stdin, stdout)
            if not line:
                stdout.write("\n")
                return 0
            try:
                if session.handle(line.strip(), stdout) == "quit":
                    return 0
            except OmniError as err:
                stdout.write(f"error: {err}\n")
    finally:
        if speaker is not None:
            speaker.close()


def _speaker(args: argparse.Namespace):
    """The sentence speaker `--speak` / `--speak-dir` ask for, or None."""
    if not getattr(args, "speak", False) and getattr(args, "speak_dir", None) is None:
        return None
    from omnilm.speech.player import SentenceSpeaker
    from omnilm.speech.tts import load_engine

    return SentenceSpeaker(load_engine("espeak"), voice=args.voice, out_dir=args.speak_dir)


def _read_line(prompt: str, stdin, stdout) -> str:
    """One line with its newline, "" at end of input; a terminal gets line editing and history."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        try:
            import readline  # noqa: F401  (importing it gives input() arrow keys and history)
        except ImportError:
            pass
        try:
            return input(prompt) + "\n"
        except EOFError:
            return ""
    stdout.write(prompt)
    stdout.flush()
    return stdin.readline()


class ChatSession:
    """Conversation state of a terminal chat: pending media, history, and the commands."""

    def __init__(self, lm, *, system: str | None = None, gen: dict | None = None, speaker=None) -> None:
        self.lm, self.system, self.gen = lm, system, gen or {}
        self.speaker = speaker  # a speech.player.SentenceSpeaker: replies are also spoken, sentence by sentence
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.pending: list[dict] = []

    def prompt(self) -> str:
        """`> `, or `[image, audio] > ` while media waits to be sent with the next message."""
        return f"[{', '.join(p['type'] for p in self.pending)}] > " if self.pending else "> "

    def handle(self, line: str, out) -> str | None:
        """Run one input line: a command or a message (answered, streamed to `out`). "quit" ends the chat."""
        if not line:
            return None
        command, _, argument = line.partition(" ")
        if command in ("/quit", "/exit"):
            return "quit"
        if command == "/reset":
            self.reset()
            out.write("conversation cleared\n")
            return None
        if command == "/help":
            out.write(HELP + "\n")
            return None
        if command in ("/image", "/audio", "/video"):
            kind = command[1:]
            path = Path(argument.strip().strip("'\"")).expanduser()  # terminals quote dropped files
            if not path.is_file():
                raise OmniError(f"{kind} file {path} does not exist")
            if kind not in self.lm.modalities:
                takes = ", ".join(self.lm.modalities) or "text only"
                raise OmniError(f"this model does not take {kind}; it takes {takes}")
            self.pending.append({"type": kind, kind: str(path)})
            out.write(f"attached {kind} {path.name}\n")
            return None
        if command.startswith("/"):
            out.write(f"unknown command {command}; {HELP}\n")
            return None
        content = [*self.pending, {"type": "text", "text": line}]
        self.messages.append({"role": "user", "content": content})
        sentences = SentenceSplitter()
        try:
            reply = ""
            for piece in self.lm.stream(self.messages, **self.gen):
                reply += piece
                out.write(piece)
                out.flush()
                for sentence in sentences.feed(piece) if self.speaker else ():
                    self.speaker.say(sentence)
            out.write("\n")
            if self.speaker is not None:
                for sentence in sentences.flush():
                    self.speaker.say(sentence)
                self.speaker.end_turn()
        except OmniError:
            self.messages.pop()  # keep the history usable after a bad message
            if self.pending:
                out.write(f"dropped {len(self.pending)} attachment(s); attach them again once fixed\n")
                self.pending = []
            raise
        self.pending = []
        self.messages.append({"role": "assistant", "content": reply})
        return None
