"""CLLM's kernels for NVIDIA GPUs, through Numba's CUDA target (`pip install -e '.[cuda]'`).

The same operations, flat float32 buffers and layouts as the CPU kernels in cllm/kernels/, on device
arrays; cllm/device.py's CudaModel calls them. Importing this package needs numba-cuda; running the
kernels needs a GPU, or NUMBA_ENABLE_CUDASIM=1 (Numba's simulator, set before numba.cuda is first
imported), which is how the tests run them. Legend as in cllm/kernels/_common.py.
"""
from .adamw import NORM_BLOCKS, adamw_update, grad_norm_squared
from .attention import attention_backward, attention_forward
from .block import block_tail_forward, layernorm_matmul_forward
from .decode import forward_rows, llama_forward_rows, llama_scratch, scratch
from .elementwise import (
    encoder_backward,
    encoder_forward,
    fill_inplace,
    gelu_backward,
    gelu_forward,
    residual_forward,
    scale_inplace,
)
from .layernorm import layernorm_backward, layernorm_forward
from .matmul import gemm, linear, matmul_backward, matmul_forward, matmul_gelu_forward
from .softmax import (
    crossentropy_forward,
    crossentropy_softmax_backward,
    crossentropy_softmax_backward_inplace,
    softmax_forward,
)

__all__ = [
    "NORM_BLOCKS", "adamw_update", "attention_backward", "attention_forward", "block_tail_forward",
    "crossentropy_forward", "crossentropy_softmax_backward", "crossentropy_softmax_backward_inplace",
    "encoder_backward", "encoder_forward", "fill_inplace", "forward_rows", "gelu_backward", "gelu_forward", "gemm",
    "grad_norm_squared", "layernorm_backward", "layernorm_forward", "layernorm_matmul_forward", "linear",
    "matmul_backward", "matmul_forward", "matmul_gelu_forward", "residual_forward", "scale_inplace", "scratch",
    "softmax_forward", "llama_forward_rows", "llama_scratch",
]

# grouped-query attention (cllm/kernels/cuda/gqa.py)
from .gqa import gqa_backward, gqa_decode, gqa_forward, gqa_prefill  # noqa: E402

__all__ += ["gqa_forward", "gqa_backward", "gqa_decode", "gqa_prefill"]

# the Llama family's operations (RMSNorm, rotary embeddings, SwiGLU)
from .rmsnorm import rmsnorm_backward, rmsnorm_forward  # noqa: E402
from .rope import rope_backward, rope_forward  # noqa: E402
from .swiglu import swiglu_backward, swiglu_forward  # noqa: E402

__all__ += ["rmsnorm_forward", "rmsnorm_backward", "rope_forward", "rope_backward", "swiglu_forward",
            "swiglu_backward"]
