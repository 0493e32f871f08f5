"""Write a tiny Stable Diffusion pipeline with random weights (seed 0), for smoke tests only.

Small UNet, VAE and CLIP text encoder (the shapes diffusers' own tests use), a character-level CLIP
BPE tokenizer written here (no Hub download), DDIM scheduler: about 600 KB, 4 steps at 32x32 in
seconds on a CPU. The same torch writes the same bytes, so the image layer is reproducible.
Usage: python tiny_pipeline.py <directory>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def byte_alphabet() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    letters = []
    for byte in range(256):
        if byte in keep:
            letters.append(chr(byte))
        else:
            letters.append(chr(256 + extra))
            extra += 1
    return letters


def tokenizer(directory: Path) -> CLIPTokenizer:
    letters = byte_alphabet()
    vocab = {
        token: i
        for i, token in enumerate(
            ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
        )
    }
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)


def main(out: Path) -> None:
    torch.manual_seed(0)
    scratch = out.with_name(out.name + ".tokenizer")
    scratch.mkdir(parents=True, exist_ok=True)
    words = tokenizer(scratch)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=64,
            layer_norm_eps=1e-05,
            num_attention_heads=8,
            num_hidden_layers=3,
            vocab_size=len(words),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=words,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
