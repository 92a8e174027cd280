"""Fusion modes beyond placing media features among the token embeddings (`fusion.mode: embed`)."""

from omnilm.fusion.gated_xattn import GatedXAttnFusion, MediaContext, decoder_layers

__all__ = ["GatedXAttnFusion", "MediaContext", "decoder_layers"]
