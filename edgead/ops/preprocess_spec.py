"""`ImagePreprocess`: the input an image graph expects, declared by its detector (torch-free).

timm keeps a model's preprocessing in its `PretrainedCfg`; edgead's image detectors declare
theirs with `BaseDetector.input_preprocess()` (backbones at registration), and the exporter
copies it into the manifest's `input` (mean, std, layout, channel order, channel count).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgead.errors import ConfigError


@dataclass(frozen=True)
class ImagePreprocess:
    """The input an image detector's graph expects (timm's `PretrainedCfg` habit).

    The graph takes uint8 (B, H, W, `channels`) in `layout` with channels in `channel_order`
    and computes `(x / 255 - mean) / std` inside itself; the exporter copies these fields into
    the manifest's `input`, so the bundle states its preprocessing without anyone inspecting
    the graph.

    mean, std: per-channel statistics on 0..1 values, `channels` floats each (std > 0).
    channels: 3 (colour images; gray files are expanded to 3 channels by the decoder).
    layout: "NHWC". channel_order: "RGB".

    Raises:
        ConfigError: lengths that differ from `channels`, a std <= 0 or an unknown layout.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    layout: str = "NHWC"
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if len(mean) != self.channels or len(std) != self.channels:
            raise ConfigError(
                f"preprocessing declares {self.channels} channels but mean has {len(mean)} and "
                f"std {len(std)} values; give one value per channel"
            )
        if not all(v > 0 for v in std):
            raise ConfigError(f"preprocessing std must be > 0 per channel, got {std}")
        if self.layout != "NHWC" or self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(
                f"preprocessing layout {self.layout!r} / channel order {self.channel_order!r}: "
                "image graphs take NHWC RGB (or BGR)"
            )
