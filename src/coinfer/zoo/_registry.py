"""The zoo's table: name → factory, default input, published cost."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

# Text models take token ids drawn from this many ids (the smallest vocabulary in the zoo, so
# ids are valid for every text model: BERT's 30522 < GPT-2's 50257).
TEXT_VOCAB_FOR_INPUTS = 30522


@dataclass(frozen=True, slots=True)
class ZooEntry:
    """One zoo model.

    Attributes
    ----------
    name : str
        The spec users type (``coinfer inspect resnet50``).
    description : str
        One line: architecture and what kind of graph it is.
    factory : str
        ``"module:function"`` inside ``coinfer.zoo``; imported lazily so listing the zoo does
        not import every family (or transformers).
    input_shape : tuple[int, ...]
        Default example-input shape (batch first).
    input_kind : {"image", "tokens", "vector"}
        How example inputs are drawn: ``randn`` for images/vectors, token ids for text.
    published_gmacs : float | None
        Multiply-accumulates in billions at ``input_shape`` as published (None if no
        standard figure exists); FLOPs are 2 × MACs.
    """

    name: str
    description: str
    factory: str
    input_shape: tuple[int, ...]
    input_kind: Literal["image", "tokens", "vector"] = "image"
    published_gmacs: float | None = None

    def build(self) -> nn.Module:
        """Call the factory (callers seed the RNG; see :func:`coinfer.zoo.load_model`)."""
        return self.resolve()()

    def param_count(self) -> int:
        """Number of parameters, counted on the meta device (no weights are allocated).

        Shared (tied) parameters count once, as ``nn.Module.parameters`` yields them once.
        """
        import torch

        with torch.device("meta"):
            model = self.build()
        return sum(p.numel() for p in model.parameters())

    def resolve(self) -> Callable[[], nn.Module]:
        module_name, _, attr = self.factory.partition(":")
        module = importlib.import_module(f"coinfer.zoo.{module_name}")
        return getattr(module, attr)


_IMAGE = (1, 3, 224, 224)
# Text models: batch 1, sequence length 128 (the brief's standard prompt length).
_TEXT = (1, 128)

_ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry("alexnet", "AlexNet, 5 conv + 3 FC, a chain", "cnn:alexnet", _IMAGE, "image", 0.71),
    ZooEntry("vgg16", "VGG-16, 13 conv + 3 FC, a chain", "cnn:vgg16", _IMAGE, "image", 15.5),
    ZooEntry("resnet18", "ResNet-18, basic residual blocks", "resnet:resnet18", _IMAGE, "image", 1.82),
    ZooEntry("resnet50", "ResNet-50, bottleneck residual blocks", "resnet:resnet50", _IMAGE, "image", 4.1),
    ZooEntry("mobilenet_v2", "MobileNetV2 1.0, inverted residuals", "mobilenet:mobilenet_v2", _IMAGE, "image", 0.30),
    ZooEntry("inception", "GoogLeNet (Inception v1, BN), 4-branch concat DAG", "inception:inception", _IMAGE, "image", 1.5),
    ZooEntry("tiny_yolov2", "Tiny YOLOv2 (VOC) detector", "yolo:tiny_yolov2", (1, 3, 416, 416), "image", 3.49),
    ZooEntry("unet", "U-Net, long skip concats across the net", "unet:unet", _IMAGE, "image", None),
    ZooEntry("vit_b16", "ViT-B/16 (transformers if installed, else plain)", "hf:vit_b16", _IMAGE, "image", 17.6),
    ZooEntry("bert_base", "BERT-base encoder (transformers if installed, else plain)", "hf:bert_base", _TEXT, "tokens", None),
    ZooEntry("gpt2", "GPT-2 small, tied LM head (transformers if installed, else plain)", "hf:gpt2", _TEXT, "tokens", None),
    ZooEntry("vit_b16_plain", "ViT-B/16 image transformer, plain PyTorch", "transformer:vit_b16", _IMAGE, "image", 17.6),
    ZooEntry("bert_base_plain", "BERT-base encoder, plain PyTorch", "transformer:bert_base", _TEXT, "tokens", None),
    ZooEntry("gpt2_plain", "GPT-2 small decoder, tied LM head, plain PyTorch", "transformer:gpt2", _TEXT, "tokens", None),
    ZooEntry("tiny_cnn", "tiny test chain: 3 conv + linear", "tiny:tiny_cnn", (1, 3, 32, 32), "image", None),
    ZooEntry("tiny_dag", "tiny test DAG: branches, concat, residual, long skip", "tiny:tiny_dag", (1, 3, 16, 16), "image", None),
    ZooEntry("tiny_mlp", "tiny test MLP: 3 linear + GELU", "tiny:tiny_mlp", (1, 64), "vector", None),
)  # fmt: skip

ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def list_models() -> list[ZooEntry]:
    """All zoo entries in table order."""
    return list(_ENTRIES)
