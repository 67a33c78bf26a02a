"""Build an ONNX graph of a BERT-family sentence encoder straight from its safetensors weights.

No torch export: the graph is written with `onnx.helper` from the Hugging Face config, and the output is the
pooled, L2-normalised sentence embedding, so the runtime does nothing but tokenise and run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 20
# onnxruntime's contrib ops: fused Attention, SkipLayerNormalization and BiasGelu are its fastest CPU kernels
# for BERT (what its transformer optimiser would rewrite an exported graph into).
CONTRIB = "com.microsoft"


def _strip_prefix(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Some checkpoints (BertForX) prefix every key with 'bert.'; the encoder is the same."""
    if any(key.startswith("bert.") for key in weights):
        return {key.removeprefix("bert."): value for key, value in weights.items() if key.startswith("bert.")}
    return weights


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs: object) -> str:
        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], domain=domain, **attrs))
        return output

    def matmul(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        # torch stores Linear weights as [out, in]; MatMul wants [in, out]. The bias is fused by the caller.
        w = self.const(f"{prefix}.weight_t", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        return self.op("MatMul", [x, w])

    def dense_residual_norm(
        self, x: str, residual: str, weights: dict[str, np.ndarray], prefix: str, eps: float
    ) -> str:
        """LayerNorm(x @ W + b + residual), the tail of every BERT sub-layer, as one SkipLayerNormalization."""
        return self.op(
            "SkipLayerNormalization",
            [
                self.matmul(x, weights, f"{prefix}.dense"),
                residual,
                self.const(f"{prefix}.LayerNorm.weight", weights[f"{prefix}.LayerNorm.weight"]),
                self.const(f"{prefix}.LayerNorm.bias", weights[f"{prefix}.LayerNorm.bias"]),
                self.const(f"{prefix}.dense.bias", weights[f"{prefix}.dense.bias"]),
            ],
            domain=CONTRIB,
            epsilon=eps,
        )

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        gamma = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        beta = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)


def build_bert_graph(
    weights_path: Path, config: dict, pooling: str = "mean", normalize: bool = True
) -> onnx.ModelProto:
    """Inputs `input_ids`, `attention_mask` (int64, [batch, seq]); output `sentence_embedding` [batch, hidden]."""
    weights = _strip_prefix(load_file(str(weights_path)))
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported activation {config.get('hidden_act')!r}: only exact gelu is implemented")

    g = _GraphBuilder()
    int64 = np.int64

    # Embeddings: word + position + token type 0 (we never feed segment B), then LayerNorm.
    word = g.const("word_embeddings", weights["embeddings.word_embeddings.weight"])
    position_plus_type = (
        weights["embeddings.position_embeddings.weight"] + weights["embeddings.token_type_embeddings.weight"][0]
    )
    positions = g.const("position_embeddings", position_plus_type.astype(np.float32))
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one_i", np.array(1, int64))], axis=0)
    position_ids = g.op("Range", [g.const("zero_i", np.array(0, int64)), seq_len, "one_i"])
    x = g.op("Add", [g.op("Gather", [word, "input_ids"], axis=0), g.op("Gather", [positions, position_ids], axis=0)])
    x = g.layer_norm(x, weights, "embeddings.LayerNorm", eps)

    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask_index = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)  # Attention takes the raw 2-D mask

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}"
        # One fused Attention op (onnxruntime contrib) with Q, K and V packed into a single [hidden, 3*hidden] matmul.
        qkv_weight = np.concatenate(
            [weights[f"{p}.attention.self.{name}.weight"].T for name in ("query", "key", "value")], axis=1
        )
        qkv_bias = np.concatenate([weights[f"{p}.attention.self.{name}.bias"] for name in ("query", "key", "value")])
        context = g.op(
            "Attention",
            [
                x,
                g.const(f"{p}.qkv.weight", np.ascontiguousarray(qkv_weight)),
                g.const(f"{p}.qkv.bias", qkv_bias),
                mask_index,
            ],
            domain=CONTRIB,
            num_heads=heads,
        )
        x = g.dense_residual_norm(context, x, weights, f"{p}.attention.output", eps)
        intermediate = g.op(
            "BiasGelu",
            [
                g.matmul(x, weights, f"{p}.intermediate.dense"),
                g.const(f"{p}.intermediate.dense.bias", weights[f"{p}.intermediate.dense.bias"]),
            ],
            domain=CONTRIB,
        )
        x = g.dense_residual_norm(intermediate, x, weights, f"{p}.output", eps)

    if pooling == "cls":
        pooled = g.op("Squeeze", [g.op("Slice", [x, "zero_1d", "one_1d", "one_1d"]), "one_1d"])
        g.const("zero_1d", np.array([0], int64))
        g.const("one_1d", np.array([1], int64))
    elif pooling == "mean":
        mask_3d = g.op("Unsqueeze", [mask_f, g.const("axis_2", np.array([2], int64))])
        summed = g.op("ReduceSum", [g.op("Mul", [x, mask_3d]), "one_1d"], keepdims=0)
        g.const("one_1d", np.array([1], int64))
        counts = g.op("ReduceSum", [mask_f, "one_1d"], keepdims=1)
        pooled = g.op("Div", [summed, g.op("Max", [counts, g.const("tiny", np.array(1e-9, np.float32))])])
    else:
        raise ValueError(f"unsupported pooling {pooling!r}: use 'mean' or 'cls'")

    if normalize:
        norm = g.op("ReduceL2", [pooled, g.const("last_axis", np.array([-1], int64))], keepdims=1)
        pooled = g.op("Div", [pooled, g.op("Max", [norm, g.const("norm_floor", np.array(1e-12, np.float32))])])
    g.nodes.append(helper.make_node("Identity", [pooled], ["sentence_embedding"]))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, 1)])
    model.ir_version = 10
    return model
