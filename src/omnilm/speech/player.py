"""Replies spoken in the terminal (`omnilm chat --speak`): each sentence is synthesised and played by the first
audio player found (paplay, aplay, ffplay, afplay) while the next is generated, or written as WAV files."""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from omnilm.speech.encode import encode_audio
from omnilm.speech.tts import SpeechEngine

logger = logging.getLogger(__name__)

PLAYERS = {"paplay": [], "aplay": ["-q"], "ffplay": ["-nodisp", "-autoexit", "-loglevel", "quiet"], "afplay": []}


def find_player() -> list[str] | None:
    """The command (without the file) of the first audio player installed, or None."""
    for name, flags in PLAYERS.items():
        path = shutil.which(name)
        if path is not None:
            return [path, *flags]
    return None


class SentenceSpeaker:
    """`say(sentence)` queues a sentence; a worker thread speaks the queue in order. With `out_dir` (or when no
    player exists) each sentence becomes `out_dir/reply-TTT-NN.wav` instead; `written` lists those files."""

    def __init__(self, engine: SpeechEngine, *, voice: str = "alloy", out_dir: str | Path | None = None,
                 player: list[str] | None = None) -> None:
        engine.check_voice(voice)
        self.engine, self.voice = engine, voice
        self.player = None if out_dir is not None else (player or find_player())
        self.out_dir = Path(out_dir or "omnilm-speech") if self.player is None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []
        self.turn, self.count = 0, 0
        self.queue: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._run, name="omnilm-speaker", daemon=True)
        self.worker.start()

    def say(self, sentence: str) -> None:
        self.queue.put(sentence)

    def end_turn(self) -> None:
        """Wait until the reply is spoken (or written); the next one numbers its files anew."""
        self.queue.join()
        self.turn, self.count = self.turn + 1, 0

    def close(self) -> None:
        self.queue.put(None)
        self.worker.join()

    def _run(self) -> None:
        while (sentence := self.queue.get()) is not None:
            try:
                self._speak(sentence)
            except Exception:  # a sentence that cannot be spoken must not end the chat
                logger.exception("could not speak %r", sentence)
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def _speak(self, sentence: str) -> None:
        samples, rate = self.engine.synthesize(sentence, voice=self.voice)
        wav = encode_audio(samples, rate, "wav")
        if self.out_dir is not None:
            path = self.out_dir / f"reply-{self.turn:03d}-{self.count:02d}.wav"
            path.write_bytes(wav)
            self.written.append(path)
            self.count += 1
            return
        with tempfile.NamedTemporaryFile(suffix=".wav") as file:
            file.write(wav)
            file.flush()
            subprocess.run([*self.player, file.name], check=False, capture_output=True)
