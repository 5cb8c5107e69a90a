"""Encoders: torchvision ResNets without their classifier, random init unless a local weights
file is given (nothing is downloaded). `resnet_small` is torchvision's own ResNet class with one
BasicBlock per stage: enough steps per minute on 2 CPU cores for the demo to learn pose."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock, ResNet


def build_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """(encoder returning a flat feature vector, its dimension)."""
    if name == "resnet_small":
        model: ResNet = ResNet(BasicBlock, [1, 1, 1, 1])
    elif name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        model = getattr(resnet, name)(weights=None)
    else:
        raise ValueError(f"unknown backbone {name!r}; use resnet_small, resnet18, resnet50, ...")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"train.weights: {path} does not exist (weights are never downloaded)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{path}: not a {name} checkpoint (missing {missing[:3]}...)")
    dimension = model.fc.in_features
    model.fc = nn.Identity()
    return model, dimension
