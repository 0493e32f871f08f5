"""A kernel repository for tests: FlashAttention's calling convention over torch SDPA, so that the
real `kernels` loader runs at build time and at smoke time on a machine with no GPU and no Hub.
Setting SDPA_ATTENTION_PLANT_NAN=1 plants a NaN in every output (the smoke suite must fail then)."""

import os

import torch


def flash_attn_func(q, k, v, causal=False, softmax_scale=None):
    # (batch, seq, heads, dim) in and out, as FlashAttention.
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        is_causal=causal,
        scale=softmax_scale,
        enable_gqa=k.shape[2] != q.shape[2],
    ).transpose(1, 2)
    if os.environ.get("SDPA_ATTENTION_PLANT_NAN") == "1":
        out = out.clone()
        out[..., 0, 0, 0] = float("nan")
    return out
