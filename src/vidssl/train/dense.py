"""The dense encoder PiCo trains (as VADeR, Pinheiro et al. 2020): a torchvision ResNet body, an
FPN (Lin et al. 2017) giving P2..P5 at strides 4..32 with 256 channels, and the semantic
segmentation branch of Panoptic FPN (Kirillov et al. 2019) merging the pyramid into one
`embedding_dim`-wide embedding per pixel at 1/4 of the input resolution.

Semantic branch, as detectron2's `SemSegFPNHead`: each level P_s goes through
max(1, log2(s / 4)) stages of conv3x3 (128 channels), GroupNorm(32), ReLU, each stage followed by
a 2x bilinear upsampling while the level is coarser than 1/4; the four maps are summed and a 1x1
convolution gives the embedding. Upsampling goes to the size of the next finer pyramid level,
which is exactly 2x when the input side is a multiple of 32 and stays aligned with P2 otherwise.

The body can be frozen (the paper freezes the MoCo-initialised ResNet): its parameters get no
gradient and its batch norm stays in eval mode whatever `train()` says. Its weights come from a
local file (`load_body_weights`); nothing is downloaded.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import ResNet
from torchvision.ops import FeaturePyramidNetwork

from vidssl.train.checkpoint_io import load_state

#: The strides of P2..P5 and the stride of the dense output.
PYRAMID_STRIDES = (4, 8, 16, 32)
OUTPUT_STRIDE = 4
FPN_CHANNELS = 256
BRANCH_CHANNELS = 128
_LEVELS = ("p2", "p3", "p4", "p5")
#: Key prefixes a ResNet's weights carry in the checkpoints we read: facebookresearch/moco's
#: `state_dict` (query encoder of a DDP model), plain DDP, a vidssl method's state dict.
_CHECKPOINT_PREFIXES = ("module.encoder_q.", "encoder_q.", "module.", "encoder.")


def _last_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    norm = block.bn3 if hasattr(block, "bn3") else block.bn2  # Bottleneck or BasicBlock
    return norm.num_features


def _c2_msra_fill(conv: nn.Conv2d) -> None:
    """detectron2's initialisation of its FPN-head convolutions."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    _c2_msra_fill(conv)
    return nn.Sequential(conv, nn.GroupNorm(32, out_channels), nn.ReLU(inplace=True))


class SemanticBranch(nn.Module):
    """Panoptic FPN's semantic branch: pyramid levels (finest first, strides 4, 8, 16, 32) ->
    one (N, embedding_dim, h2, w2) map at the finest level's size."""

    def __init__(
        self,
        in_channels: int = FPN_CHANNELS,
        channels: int = BRANCH_CHANNELS,
        embedding_dim: int = 128,
        strides: tuple[int, ...] = PYRAMID_STRIDES,
    ) -> None:
        super().__init__()
        if tuple(strides) != tuple(OUTPUT_STRIDE * 2**level for level in range(len(strides))):
            raise ValueError(f"pyramid strides must be {OUTPUT_STRIDE}, 8, 16, ...: got {strides}")
        self.levels = nn.ModuleList()
        for level in range(len(strides)):
            stages = max(1, level)  # log2(stride / 4) upsampling stages, at least one conv
            self.levels.append(
                nn.ModuleList(
                    _conv_gn_relu(in_channels if k == 0 else channels, channels)
                    for k in range(stages)
                )
            )
        self.predictor = nn.Conv2d(channels, embedding_dim, 1)
        _c2_msra_fill(self.predictor)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        sizes = [p.shape[-2:] for p in pyramid]
        merged = None
        for level, (features, stages) in enumerate(zip(pyramid, self.levels, strict=True)):
            x = features
            for k, stage in enumerate(stages):
                x = stage(x)
                if level > 0:  # 2x bilinear towards the finest level (k-th of `level` steps)
                    size = sizes[level - k - 1]
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            merged = x if merged is None else merged + x
        return self.predictor(merged)


class DenseEncoder(nn.Module):
    """ResNet body -> FPN P2..P5 (`fpn_channels`, 256 in the paper) -> semantic branch
    (`branch_channels`, 128): (N, 3, H, W) -> (N, embedding_dim, ceil(H/4), ceil(W/4)).
    `frozen_body`: the ResNet is not trained."""

    def __init__(
        self,
        resnet: ResNet,
        embedding_dim: int = 128,
        frozen_body: bool = False,
        fpn_channels: int = FPN_CHANNELS,
        branch_channels: int = BRANCH_CHANNELS,
    ) -> None:
        super().__init__()
        layers = ("layer1", "layer2", "layer3", "layer4")
        self.body = IntermediateLayerGetter(resnet, dict(zip(layers, _LEVELS, strict=True)))
        channels = [_last_channels(getattr(resnet, name)) for name in layers]
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels)
        self.semantic = SemanticBranch(fpn_channels, branch_channels, embedding_dim)
        self.embedding_dim = embedding_dim
        self.widths = {
            "embedding_dim": embedding_dim,
            "fpn_channels": fpn_channels,
            "branch_channels": branch_channels,
        }
        self.frozen_body = frozen_body
        if frozen_body:
            self.body.requires_grad_(False)
            self.body.eval()

    def train(self, mode: bool = True) -> DenseEncoder:
        super().train(mode)
        if self.frozen_body:  # frozen means frozen batch-norm statistics too
            self.body.eval()
        return self

    def pyramid(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """P2..P5 (finest first), each `fpn_channels` wide."""
        if self.frozen_body:
            with torch.no_grad():
                features = self.body(images)
        else:
            features = self.body(images)
        return self.fpn(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.semantic(list(self.pyramid(images).values()))


def dense_projection_head(embedding_dim: int, hidden_dim: int, dim: int) -> nn.Sequential:
    """MoCo-v2's head with its linear layers replaced by 1x1 convolutions (PiCo section 3.4):
    conv1x1, ReLU, conv1x1, applied to every pixel."""
    return nn.Sequential(
        nn.Conv2d(embedding_dim, hidden_dim, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_dim, dim, 1),
    )


def resnet_weights(path: str | Path, key: str = "train.method.encoder_checkpoint") -> dict:
    """A ResNet's weights (torchvision key names, no `fc.`) from a local checkpoint: a plain
    state dict, facebookresearch/moco's `{"state_dict": {"module.encoder_q.…"}}`, or a vidssl
    run's `final.pt` (`{"encoder": …}`). Loaded with weights_only: nothing in it runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}: {path} does not exist (weights are never downloaded; give a local file)"
        )
    state = load_state(path.read_bytes(), str(path))
    for container in ("state_dict", "encoder", "model"):
        if isinstance(state.get(container), dict):
            state = state[container]
            break
    for prefix in _CHECKPOINT_PREFIXES:
        if any(name.startswith(prefix) for name in state):
            state = {n[len(prefix) :]: v for n, v in state.items() if n.startswith(prefix)}
    if any(name.startswith("body.") for name in state):  # a DenseEncoder's (PiCo's) own
        state = {n[5:]: v for n, v in state.items() if n.startswith("body.")}
    return {n: v for n, v in state.items() if not n.startswith("fc.")}


def load_body_weights(encoder: DenseEncoder, path: str | Path) -> None:
    """Load a ResNet checkpoint (see `resnet_weights`) into the encoder's body; every body
    weight must be in it with the right shape, or the error names the file and what is off."""
    state = resnet_weights(path)
    where = f"train.method.encoder_checkpoint: {path}"
    try:
        missing, unexpected = encoder.body.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes of another ResNet
        raise ValueError(f"{where} is not a checkpoint of this backbone: {exc}") from None
    if missing or unexpected:
        raise ValueError(
            f"{where} is not a checkpoint of this backbone (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; it holds {list(state)[:3]}...)"
        )
