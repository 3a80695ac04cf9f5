"""CLLM's numerical core: @njit kernels over flat arrays (see _common.py for the contract).

Legend: B batch, T time, C channels, NH heads, hs = C/NH, V vocab, Vp padded vocab, L layers,
OC output channels, N element count.
"""
from .adamw import adamw_update, ema_update, fill_inplace, grad_norm_squared, scale_inplace
from .attention import attention_backward, attention_forward
from .block import block_tail_forward, layernorm_matmul_forward
from .decode import decode_step, llama_forward_rows, prefill
from .dropout import derive_key, dropout_backward, dropout_forward
from .encoder import encoder_backward, encoder_forward
from .gelu import gelu_backward, gelu_forward
from .layernorm import layernorm_backward, layernorm_forward
from .matmul import matmul_backward, matmul_forward, matmul_gelu_forward
from .quant import dequantize_int8_rows, matvec_int8_forward, quantize_int8_rows
from .residual import residual_forward
from .softmax import (
    crossentropy_forward,
    crossentropy_softmax_backward,
    crossentropy_softmax_backward_inplace,
    softmax_forward,
)

__all__ = [
    "adamw_update", "ema_update", "grad_norm_squared", "scale_inplace", "fill_inplace",
    "attention_forward", "attention_backward", "decode_step", "llama_forward_rows", "prefill",
    "dropout_forward", "dropout_backward", "derive_key",
    "encoder_forward", "encoder_backward", "gelu_forward", "gelu_backward",
    "layernorm_forward", "layernorm_backward", "matmul_forward", "matmul_backward",
    "matmul_gelu_forward", "layernorm_matmul_forward", "block_tail_forward",
    "residual_forward", "quantize_int8_rows", "dequantize_int8_rows", "matvec_int8_forward",
    "softmax_forward", "crossentropy_forward", "crossentropy_softmax_backward",
    "crossentropy_softmax_backward_inplace",
]

# grouped-query attention (cllm/kernels/gqa.py)
from .gqa import gqa_backward, gqa_decode, gqa_forward, gqa_prefill  # noqa: E402

__all__ += ["gqa_forward", "gqa_backward", "gqa_decode", "gqa_prefill"]

# the Llama family's operations (RMSNorm, rotary embeddings, SwiGLU)
from .rmsnorm import rmsnorm_backward, rmsnorm_forward  # noqa: E402
from .rope import rope_backward, rope_forward, rope_table  # noqa: E402
from .swiglu import swiglu_backward, swiglu_forward  # noqa: E402

__all__ += ["rmsnorm_forward", "rmsnorm_backward", "rope_table", "rope_forward", "rope_backward",
            "swiglu_forward", "swiglu_backward"]

# the llama block options (cllm/config.py: activation relu2, qk_norm, logit_softcap)
from .qknorm import qknorm_backward, qknorm_forward  # noqa: E402
from .relu2 import relu2_backward, relu2_forward  # noqa: E402
from .softcap import softcap_backward, softcap_forward  # noqa: E402

__all__ += ["relu2_forward", "relu2_backward", "qknorm_forward", "qknorm_backward", "softcap_forward",
            "softcap_backward"]

# Muon's momentum, Newton-Schulz orthogonalization and update (cllm/kernels/muon.py)
from .muon import muon_update, newton_schulz  # noqa: E402

__all__ += ["muon_update", "newton_schulz"]
