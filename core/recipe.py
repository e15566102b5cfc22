"""The recipe: every step of the classical pipeline and its parameters, as a validated value.

A :class:`Recipe` is plain data and round-trips through JSON, so the Preprocess page, the CLI
(``preprocess``, ``segment --model classical``) and the Compare page's "classical" model all
run the same thing (:func:`core.preprocess.run_pipeline`). Steps, in order:

channel -> rotate -> normalize -> denoise -> background -> threshold -> canny ->
morphology -> watershed -> filters
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CHANNEL_SOURCES = ("nucleus", "cytoplasm", "protein", "mean", "max")  # or "index:N"
DENOISE_METHODS = ("gaussian", "median", "bilateral", "nlmeans")
BACKGROUND_METHODS = ("gaussian", "tophat")
THRESHOLD_METHODS = ("otsu", "otsu_gaussian", "triangle", "manual", "adaptive_mean", "adaptive_gaussian")
MORPH_OPS = ("none", "open", "close", "erode", "dilate")
KERNEL_SHAPES = ("ellipse", "rect", "cross")  # core.preprocess maps them to OpenCV's


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class ChannelStep:
    source: str = "nucleus"  # a role, "mean"/"max" of all channels, or "index:N"

    def validate(self) -> None:
        ok = self.source in CHANNEL_SOURCES or (self.source.startswith("index:") and self.source[6:].isdigit())
        _check(ok, f"channel.source must be one of {CHANNEL_SOURCES} or 'index:N', got {self.source!r}")


@dataclass(frozen=True)
class RotateStep:
    enabled: bool = False
    angle: float = 0.0  # degrees, counter-clockwise (OpenCV convention)
    scale: float = 1.0
    center_x: float = 0.5  # fraction of the width
    center_y: float = 0.5  # fraction of the height
    flip_horizontal: bool = False
    flip_vertical: bool = False

    def validate(self) -> None:
        _check(0.1 <= self.scale <= 10, "rotate.scale must be between 0.1 and 10")
        _check(0 <= self.center_x <= 1 and 0 <= self.center_y <= 1, "rotate.center_x/center_y are fractions in [0, 1]")


@dataclass(frozen=True)
class NormalizeStep:
    enabled: bool = True
    clip_low: float = 0.5  # percentile mapped to 0
    clip_high: float = 99.8  # percentile mapped to 1
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tiles: int = 8

    def validate(self) -> None:
        _check(0 <= self.clip_low < self.clip_high <= 100, "normalize needs 0 <= clip_low < clip_high <= 100")
        _check(self.clahe_clip_limit > 0 and 1 <= self.clahe_tiles <= 64, "CLAHE needs clip limit > 0 and 1..64 tiles")


@dataclass(frozen=True)
class DenoiseStep:
    enabled: bool = True
    method: str = "gaussian"
    sigma: float = 1.0  # gaussian, pixels
    ksize: int = 3  # median, odd
    bilateral_d: int = 5
    bilateral_sigma_color: float = 0.1  # in normalised intensity units
    nlmeans_h: float = 0.06  # in normalised intensity units

    def validate(self) -> None:
        _check(self.method in DENOISE_METHODS, f"denoise.method must be one of {DENOISE_METHODS}")
        _check(0 < self.sigma <= 20, "denoise.sigma must be in (0, 20]")
        _check(self.ksize % 2 == 1 and 3 <= self.ksize <= 31, "denoise.ksize must be odd, 3..31")
        _check(1 <= self.bilateral_d <= 25, "denoise.bilateral_d must be 1..25")


@dataclass(frozen=True)
class BackgroundStep:
    enabled: bool = True
    method: str = "tophat"  # white top-hat (keeps objects smaller than the radius), or minus a large Gaussian
    radius: int = 0  # pixels, larger than a cell; 0 = from the typical cell size

    def validate(self) -> None:
        _check(self.method in BACKGROUND_METHODS, f"background.method must be one of {BACKGROUND_METHODS}")
        _check(self.radius == 0 or 2 <= self.radius <= 500, "background.radius must be 0 (auto) or 2..500 pixels")


@dataclass(frozen=True)
class ThresholdStep:
    # Local (adaptive) thresholds keep dim cells next to bright ones; the floor keeps noise in
    # empty regions out. Chosen over Otsu/triangle by F1 across cell sizes (docs/pages.md, Preprocess).
    method: str = "adaptive_gaussian"
    value: float = 0.5  # manual threshold, normalised intensity
    block_size: int = 0  # adaptive: odd neighbourhood size in pixels; 0 = from the typical cell size
    offset: float = -0.01  # adaptive: subtracted from the local mean, normalised units
    floor: float = 0.3  # adaptive: pixels must also exceed this fraction of the Otsu threshold (0 = off)
    blur_sigma: float = 2.0  # otsu_gaussian: smoothing before Otsu
    invert: bool = False  # dark objects on a bright background

    def validate(self) -> None:
        _check(self.method in THRESHOLD_METHODS, f"threshold.method must be one of {THRESHOLD_METHODS}")
        _check(0 <= self.value <= 1, "threshold.value is a normalised intensity in [0, 1]")
        _check(self.block_size == 0 or (self.block_size % 2 == 1 and self.block_size >= 3),
               "threshold.block_size must be 0 (auto) or odd and >= 3")
        _check(0 < self.blur_sigma <= 20, "threshold.blur_sigma must be in (0, 20]")
        _check(0 <= self.floor <= 1 and -0.5 <= self.offset <= 0.5, "threshold: floor in [0, 1], offset in [-0.5, 0.5]")


@dataclass(frozen=True)
class CannyStep:
    enabled: bool = False
    low: float = 0.1  # hysteresis thresholds, normalised gradient units
    high: float = 0.3
    aperture: int = 3  # Sobel aperture: 3, 5 or 7
    l2_gradient: bool = True
    cut_mask: bool = False  # remove edge pixels from the mask: separates touching cells

    def validate(self) -> None:
        _check(0 <= self.low < self.high, "canny needs 0 <= low < high")
        _check(self.aperture in (3, 5, 7), "canny.aperture must be 3, 5 or 7")


@dataclass(frozen=True)
class MorphologyStep:
    operation: str = "open"
    ksize: int = 3
    shape: str = "ellipse"
    iterations: int = 1
    fill_holes: bool = True

    def validate(self) -> None:
        _check(self.operation in MORPH_OPS, f"morphology.operation must be one of {MORPH_OPS}")
        _check(self.shape in KERNEL_SHAPES, f"morphology.shape must be one of {tuple(KERNEL_SHAPES)}")
        _check(1 <= self.ksize <= 51 and 1 <= self.iterations <= 10, "morphology: ksize 1..51, iterations 1..10")


@dataclass(frozen=True)
class WatershedStep:
    enabled: bool = True
    seed_distance: int = 0  # minimum distance between seeds, pixels; 0 = from the typical cell size
    smoothing: float = 1.0  # Gaussian sigma on the distance transform; fewer spurious seeds

    def validate(self) -> None:
        _check(0 <= self.seed_distance <= 200, "watershed.seed_distance must be 0 (auto) .. 200")
        _check(0 <= self.smoothing <= 10, "watershed.smoothing must be 0..10")


@dataclass(frozen=True)
class FilterStep:
    min_area: int = -1  # pixels; -1 = a fraction of the typical cell area
    max_area: int = 0  # pixels; 0 = no upper limit
    remove_border: bool = False

    def validate(self) -> None:
        _check(self.min_area >= -1 and self.max_area >= 0, "filters: min_area >= -1 (auto), max_area >= 0 (off)")
        _check(self.max_area == 0 or self.max_area > self.min_area, "filters.max_area must exceed min_area")


STEP_TYPES = {
    "channel": ChannelStep,
    "rotate": RotateStep,
    "normalize": NormalizeStep,
    "denoise": DenoiseStep,
    "background": BackgroundStep,
    "threshold": ThresholdStep,
    "canny": CannyStep,
    "morphology": MorphologyStep,
    "watershed": WatershedStep,
    "filters": FilterStep,
}
STEP_ORDER = tuple(STEP_TYPES)


@dataclass(frozen=True)
class Recipe:
    """Every step's parameters, in pipeline order. Hashable: a cache key as it is."""

    channel: ChannelStep = field(default_factory=ChannelStep)
    rotate: RotateStep = field(default_factory=RotateStep)
    normalize: NormalizeStep = field(default_factory=NormalizeStep)
    denoise: DenoiseStep = field(default_factory=DenoiseStep)
    background: BackgroundStep = field(default_factory=BackgroundStep)
    threshold: ThresholdStep = field(default_factory=ThresholdStep)
    canny: CannyStep = field(default_factory=CannyStep)
    morphology: MorphologyStep = field(default_factory=MorphologyStep)
    watershed: WatershedStep = field(default_factory=WatershedStep)
    filters: FilterStep = field(default_factory=FilterStep)

    def __post_init__(self) -> None:
        for name in STEP_ORDER:
            getattr(self, name).validate()

    def to_dict(self) -> dict[str, Any]:
        return {"cellscope_recipe": 1, "steps": {name: asdict(getattr(self, name)) for name in STEP_ORDER}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build from a dict; missing steps or keys take defaults, unknown ones are errors."""
        if not isinstance(data, dict):
            raise ValueError("a recipe is a JSON object")
        steps = data.get("steps", data)
        if not isinstance(steps, dict):
            raise ValueError("recipe 'steps' must be an object")
        unknown = set(steps) - set(STEP_ORDER) - {"cellscope_recipe"}
        if unknown:
            raise ValueError(f"unknown recipe steps {sorted(unknown)}; known: {list(STEP_ORDER)}")
        built = {}
        for name, step_type in STEP_TYPES.items():
            params = steps.get(name, {})
            if not isinstance(params, dict):
                raise ValueError(f"recipe step {name!r} must be an object")
            known = {f.name: f for f in fields(step_type)}
            bad = set(params) - set(known)
            if bad:
                raise ValueError(f"unknown keys in step {name!r}: {sorted(bad)}; known: {sorted(known)}")
            typed = {}
            for key, value in params.items():
                default = getattr(step_type(), key)
                try:
                    typed[key] = type(default)(value) if not isinstance(default, bool) else _as_bool(value)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{name}.{key} must be {type(default).__name__}, got {value!r}") from exc
            built[name] = step_type(**typed)
        return cls(**built)

    @classmethod
    def from_json(cls, text: str | bytes) -> Recipe:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"recipe is not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def with_step(self, name: str, **changes: Any) -> Recipe:
        return replace(self, **{name: replace(getattr(self, name), **changes)})


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ValueError(value)


DEFAULT_RECIPE = Recipe()
