"""The U-Net itself: its architecture record and the network, three classes per pixel
(background, interior, boundary). torch is imported inside the functions, so importing
:mod:`models` stays fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2  # the classes, in the order of the network's output channels


@dataclass(frozen=True)
class UNetConfig:
    """The architecture and its input: what a checkpoint needs to be rebuilt and fed."""

    in_channels: int = 1
    base: int = 16  # channels of the first level, doubled at each level below
    depth: int = 3  # pooling steps: depth + 1 levels
    planes: str = "nucleus"  # core.training.data.input_planes: what the model reads
    boundary_width: int = 2  # pixels of each object's rim labelled boundary

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= 16 or not 4 <= self.base <= 128 or not 1 <= self.depth <= 5:
            raise ValueError(f"U-Net needs 1-16 input channels, base 4-128 and depth 1-5; got {self}")
        if self.boundary_width < 1:
            raise ValueError(f"boundary_width must be at least 1; got {self.boundary_width}")

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (each pooling halves them)."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        try:
            return cls(int(data["in_channels"]), int(data["base"]), int(data["depth"]), str(data["planes"]),
                       int(data["boundary_width"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"U-Net settings incomplete or malformed: {data!r}") from exc


@cache
def _unet_class() -> type:
    """The module class, made on first use so that importing this file does not import torch."""
    import torch
    from torch import nn

    def double_conv(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        """Encoder of ``depth + 1`` double-conv levels (max-pool between), decoder of transposed
        convolutions and skip connections, a 1x1 convolution to the three classes' logits."""

        def __init__(self, config: UNetConfig) -> None:
            super().__init__()
            self.config = config
            widths = [config.base * 2**i for i in range(config.depth + 1)]
            self.down = nn.ModuleList([double_conv(config.in_channels, widths[0])]
                                      + [double_conv(a, b) for a, b in zip(widths, widths[1:], strict=False)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:], strict=False)])
            self.merge = nn.ModuleList([double_conv(2 * a, a) for a in widths[:-1]])
            self.head = nn.Conv2d(widths[0], 3, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                x = block(x if i == 0 else self.pool(x))
                skips.append(x)
            x = skips.pop()
            for up, merge in zip(reversed(self.up), reversed(self.merge), strict=True):
                x = merge(torch.cat([skips.pop(), up(x)], dim=1))
            return self.head(x)

    return UNet


def build_unet(config: UNetConfig) -> torch.nn.Module:
    """An untrained U-Net; ``model(x)`` maps (n, C, H, W) with H, W multiples of ``config.multiple``
    to (n, 3, H, W) logits (background, interior, boundary)."""
    return _unet_class()(config)


def n_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
