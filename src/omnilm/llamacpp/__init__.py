"""The llama.cpp engine: the LLM runs in llama.cpp (GGUF, quantized), encoders and connectors in PyTorch.

Media features enter llama.cpp's batch as embeddings (`llama_batch.embd`), so every encoder and connector
omnilm has works. `omnilm.load(path, engine="llama.cpp")` returns a `LlamaCppLM` with OmniLM's API;
`omnilm export MODEL OUT --to gguf` writes the directory it loads.
"""

from omnilm.llamacpp.native import INSTALL_COMMAND, PORTABLE_CMAKE_ARGS, require_llama_cpp

__all__ = ["INSTALL_COMMAND", "PORTABLE_CMAKE_ARGS", "require_llama_cpp"]
