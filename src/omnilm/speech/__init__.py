"""Voice in and out: Whisper speech recognition over 30 s windows (`asr`), text-to-speech engines (`tts`:
espeak-ng, piper), PyAV encoding of OpenAI's audio formats (`encode`), captions (`captions`) and the
sentence splitter that lets a streamed answer be spoken sentence by sentence (`sentences`)."""

from omnilm.speech.asr import Recognizer, Transcript
from omnilm.speech.encode import FORMATS, encode_audio
from omnilm.speech.sentences import SentenceSplitter
from omnilm.speech.tts import OPENAI_VOICES, SpeechEngine, load_engine

__all__ = ["FORMATS", "OPENAI_VOICES", "Recognizer", "SentenceSplitter", "SpeechEngine", "Transcript",
           "encode_audio", "load_engine"]
