"""A kernel repository for tests: FlashAttention's calling convention over torch SDPA, so that the
real `kernels` loader runs at build time and at smoke time on a machine with no GPU and no Hub.
Causal with q_len != k_len is aligned to the bottom right, as FlashAttention does.

Planted faults, each of which the smoke suite must see:
SDPA_ATTENTION_PLANT_NAN=1    a NaN in every output
SDPA_ATTENTION_PLANT_ROW=1    one wrong query row (the last one of batch 0, head 0, halved)
SDPA_ATTENTION_PLANT_FAULT=1  the process dies (SIGSEGV), as a kernel's illegal memory access does
SDPA_ATTENTION_PLANT_OOM=N    out of memory for key lengths over N"""

import os
import signal

import torch


def flash_attn_func(q, k, v, causal=False, softmax_scale=None):
    # (batch, seq, heads, dim) in and out, as FlashAttention.
    if os.environ.get("SDPA_ATTENTION_PLANT_FAULT") == "1":
        os.kill(os.getpid(), signal.SIGSEGV)
    limit = os.environ.get("SDPA_ATTENTION_PLANT_OOM")
    if limit and k.shape[1] > int(limit):
        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {q.numel() * k.shape[1] * 4 / 2**30:.2f} GiB (planted)"
        )
    mask = None
    if causal and q.shape[1] != k.shape[1]:
        from torch.nn.attention.bias import causal_lower_right

        mask, causal = causal_lower_right(q.shape[1], k.shape[1]), False
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=causal,
        scale=softmax_scale,
        enable_gqa=k.shape[2] != q.shape[2],
    ).transpose(1, 2)
    if os.environ.get("SDPA_ATTENTION_PLANT_NAN") == "1":
        out = out.clone()
        out[..., 0, 0, 0] = float("nan")
    if os.environ.get("SDPA_ATTENTION_PLANT_ROW") == "1":
        out = out.clone()
        out[0, -1, 0, :] *= 0.5
    return out
