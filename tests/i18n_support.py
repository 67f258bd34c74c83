"""What counts as English left in a Chinese page or text: Latin words outside the names a Chinese class keeps
as they are (notation, token names, model and method names, papers, code). Shared by the catalogue, lesson,
handler and browser tests."""
from __future__ import annotations

import re

# Latin words a Chinese page keeps as they are: notation, names of tokens, models, methods, papers and code
ALLOWED = {"ViT", "CLS", "DIST", "REG", "softmax", "Transformer", "Transformers", "Swin", "RoPE", "Darcet",
           "Abnar", "Zuidema", "Vision", "Need", "Registers", "et", "al", "max", "exp", "out", "pos_embed",
           "W_Q", "W_K", "W_V", "W_O", "x_i", "a_j", "v_j", "L2", "d", "q", "k", "v", "z", "T", "I", "i", "j",
           "p", "r", "c", "H", "W", "a", "demo", "vit", "sha256", "qkv", "timm", "Attention", "nn", "MultiheadAttention",
           "attn", "SelfAttention2d", "CNNSelfAttention", "CNN", "cnn", "selfattn",
           # the app's proper names: languages, file types, methods and their authors, libraries, hardware
           "English", "API", "PNG", "JPEG", "PDF", "HTML", "JSON", "ONNX", "EMA", "ImageNet", "Grad", "CAM",
           "AttnLRP", "LRP", "Chefer", "Gradio", "gradio_client", "CPU", "GPU", "MPS", "CUDA", "URL", "HF",
           "DeiT", "DINOv2", "BEiT", "CLIP", "SigLIP", "Hugging", "Face", "torchvision", "open_clip", "safetensors",
           "pth", "pt", "bin", "ckpt", "tar", "onnx", "txt", "json", "png", "jpg", "webp", "save_pretrained",
           "top", "id", "QK", "ms", "MB", "GB", "KB", "px", "x", "y", "L",
           # the methods' authors, venues and libraries, and the architectures their reasons name
           "Gur", "Wolf", "Selvaraju", "Achtibat", "lxt", "CVPR", "XCiT", "PVT", "Twins",
           # the faithfulness scores (area under the curve; under the ROC curve)
           "AUC", "AUROC",
           # the file formats and tools the input errors name (a PDF, a zip archive, a Git LFS pointer)
           "SVG", "zip", "PyTorch", "Git", "LFS",
           # the example photos' names (people and a cat) and the colour maps' names
           "EXIF", "RGB", "uint8", "npz", "Chelsea", "Eileen", "Collins", "Grace", "Hopper", "inferno", "viridis", "magma", "plasma", "jet",
           "turbo", "gray"}


def latin_words(text: str) -> set[str]:
    """The Latin words of `text` not in ALLOWED (code in backticks, token names such as REG3 / L0 / p(0,1),
    model names such as demo-vit or vit_small_patch16_224, and hex digests are notation)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)         # fenced code
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"(?<![0-9A-Za-z_])(?:demo-[a-z0-9-]+|[A-Za-z0-9]+(?:[-_.:/][A-Za-z0-9]+)+)",
                  lambda m: " " if m.group(0).startswith("demo-") or re.search(r"[0-9_.:/]", m.group(0))
                  else m.group(0), text)        # model / file names (demo-vit, vit_small_patch16_224, a.png)
    words = set(re.findall(r"(?<![0-9A-Za-z_])[A-Za-z_][A-Za-z0-9_]*", text))     # not the x of 64x64
    return {w for w in words if w not in ALLOWED and not re.fullmatch(r"(REG|L|p|reg)\d*|[0-9a-f]{6,}|[A-Za-z]_?[a-z0-9]?",
                                                                      w)}
