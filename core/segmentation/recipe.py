"""The recipe: every step of the classical pipeline and its parameters, as a validated value.

A :class:`Recipe` is plain data and round-trips through JSON, so the Preprocess page, the CLI
(``preprocess``, ``segment --model classical``) and the Compare page's "classical" model all
run the same thing (:func:`core.segmentation.preprocess.run_pipeline`). Steps, in order:

channel -> rotate -> normalize -> denoise -> background -> threshold -> canny ->
morphology -> watershed -> filters
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from core.schema import check_fields, setting

CHANNEL_SOURCES = ("nucleus", "cytoplasm", "protein", "mean", "max")  # or "index:N"
DENOISE_METHODS = ("gaussian", "median", "bilateral", "nlmeans")
BACKGROUND_METHODS = ("gaussian", "tophat")
THRESHOLD_METHODS = ("otsu", "otsu_gaussian", "triangle", "manual", "adaptive_mean", "adaptive_gaussian")
MORPH_OPS = ("none", "open", "close", "erode", "dilate")
KERNEL_SHAPES = ("ellipse", "rect", "cross")  # core.segmentation.preprocess maps them to OpenCV's


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# Each step's simple ranges are its fields' (core.schema): the Preprocess page's widgets, the CLI
# and this validator read the same declaration. validate() adds only the rules between fields.


@dataclass(frozen=True)
class ChannelStep:
    step: ClassVar[str] = "channel"
    source: str = setting("nucleus", label="Segment on", kind="text",
                          help="The channel (or merge of channels) the pipeline works on; nuclei are usually the "
                               "nucleus channel.")  # a role, "mean"/"max" of all channels, or "index:N"

    def validate(self) -> None:
        ok = self.source in CHANNEL_SOURCES or (self.source.startswith("index:") and self.source[6:].isdigit())
        _check(ok, f"channel.source must be one of {CHANNEL_SOURCES} or 'index:N', got {self.source!r}")


@dataclass(frozen=True)
class RotateStep:
    step: ClassVar[str] = "rotate"
    enabled: bool = setting(False, label="Rotate / flip", help="cv.getRotationMatrix2D + warpAffine, on a canvas "
                            "large enough to keep the corners. The steps below work on the turned image; the cells "
                            "found are mapped back to the image as it is, so counts, measurements and ground-truth "
                            "scores stay comparable (and the Compare and Cell map pages use the same cells).")
    angle: float = setting(0.0, label="Angle (degrees, counter-clockwise)", low=-180.0, high=180.0, step=1.0,
                           help="Rotation angle, OpenCV convention: positive turns counter-clockwise.")
    # 0.25-4 (the slider's): the validator's 10x zoom made a canvas 100 times the image's area.
    scale: float = setting(1.0, label="Scale", low=0.25, high=4.0, step=0.05, help="Zoom factor applied with the rotation.")
    center_x: float = setting(0.5, label="Centre x", low=0.0, high=1.0, step=0.05,
                              help="Rotation centre, fraction of the width. It matters only for a zoom too large for "
                                   "a canvas holding the whole image (then the image is cropped about it).")
    center_y: float = setting(0.5, label="Centre y", low=0.0, high=1.0, step=0.05,
                              help="Rotation centre, fraction of the height (see Centre x).")
    flip_horizontal: bool = setting(False, label="Flip horizontally", help="Mirror left-right.")
    flip_vertical: bool = setting(False, label="Flip vertically", help="Mirror top-bottom.")

    def validate(self) -> None:
        check_fields(self, self.step)


@dataclass(frozen=True)
class NormalizeStep:
    step: ClassVar[str] = "normalize"
    enabled: bool = setting(True, label="Percentile clip", help="Map the chosen percentiles to 0 and 1; off: min and max.")
    clip_low: float = setting(0.5, label="Percentiles", low=0.0, high=100.0, step=0.1,
                              help="Intensities below the low / above the high percentile are clipped.")  # -> 0
    clip_high: float = setting(99.8, label="Percentiles", low=0.0, high=100.0, step=0.1,
                               help="Intensities below the low / above the high percentile are clipped.")  # -> 1
    clahe: bool = setting(False, label="CLAHE", help="Contrast-limited adaptive histogram equalisation: evens out "
                          "contrast across the field.")
    clahe_clip_limit: float = setting(2.0, label="Clip limit", low=0.5, high=10.0, step=0.5,
                                      help="Higher: stronger local contrast, more noise.")
    clahe_tiles: int = setting(8, label="Tiles", low=1, high=64, step=1, help="Grid of tiles per side.")

    def validate(self) -> None:
        check_fields(self, self.step)
        _check(self.clip_low < self.clip_high, "normalize needs 0 <= clip_low < clip_high <= 100")


@dataclass(frozen=True)
class DenoiseStep:
    step: ClassVar[str] = "denoise"
    enabled: bool = setting(True, label="Denoise", help="Smooth noise before thresholding.")
    method: str = setting("gaussian", label="Method", options=DENOISE_METHODS,
                          help="Gaussian: fast, blurs edges. Median: removes speckle. Bilateral and non-local means: "
                               "keep edges, slower.")
    sigma: float = setting(1.0, label="Sigma (px)", low=0.1, high=20.0, step=0.1, help="Width of the Gaussian kernel.")
    ksize: int = setting(3, label="Kernel size", low=3, high=31, step=2, help="Odd window size in pixels.")  # median
    bilateral_d: int = setting(5, label="Diameter (px)", low=1, high=25, step=1, help="Neighbourhood diameter.")
    bilateral_sigma_color: float = setting(0.1, label="Colour sigma", low=0.01, high=1.0, step=0.01,
                                           help="Intensity differences above this are treated as edges and kept.")
    nlmeans_h: float = setting(0.06, label="Strength h", low=0.01, high=0.5, step=0.01,
                               help="Non-local means filter strength (normalised intensity units).")

    def validate(self) -> None:
        check_fields(self, self.step)
        _check(self.ksize % 2 == 1, f"denoise.ksize must be odd; got {self.ksize}")


@dataclass(frozen=True)
class BackgroundStep:
    step: ClassVar[str] = "background"
    enabled: bool = setting(True, label="Subtract background",
                            help="Removes uneven illumination and haze before thresholding.")
    # white top-hat (keeps objects smaller than the radius), or minus a large Gaussian
    method: str = setting("tophat", label="Method", options=BACKGROUND_METHODS,
                          help="tophat: image minus its morphological opening (keeps objects smaller than the radius). "
                               "gaussian: image minus a large blur.")
    radius: int = setting(0, label="Radius (px, 0 = auto)", low=2, high=500, step=1, special=(0,),
                          help="Larger than the biggest cell. 0 = 1.5 x the typical cell diameter.")

    def validate(self) -> None:
        check_fields(self, self.step)


@dataclass(frozen=True)
class ThresholdStep:
    # Local (adaptive) thresholds keep dim cells next to bright ones; the floor keeps noise in
    # empty regions out. Chosen over Otsu/triangle by F1 across cell sizes (docs/pages.md, Preprocess).
    step: ClassVar[str] = "threshold"
    method: str = setting("adaptive_gaussian", label="Method", options=THRESHOLD_METHODS,
                          help="otsu: minimises within-class variance. otsu_gaussian: Otsu after a Gaussian blur. "
                               "triangle: good for few bright objects. manual: your value. adaptive: a local "
                               "threshold per neighbourhood, robust to dim cells and uneven light (the default).")
    value: float = setting(0.5, label="Threshold", low=0.0, high=1.0, step=0.01,
                           help="Normalised intensity. For instant feedback while dragging, turn on *Live threshold "
                                "preview* in the Result view.")
    block_size: int = setting(0, label="Block size (px, 0 = auto)", low=3, high=301, step=2, special=(0,),
                              help="Odd neighbourhood size; 0 = about 4 typical cell diameters.")
    # -0.2-0.2 (the sliders'): beyond it, a local threshold of a [0, 1] image keeps all or nothing.
    offset: float = setting(-0.01, label="Offset", low=-0.2, high=0.2, step=0.005,
                            help="Subtracted from the local mean: negative values demand pixels brighter than their "
                                 "surroundings. For instant feedback while dragging, turn on *Live threshold preview* "
                                 "in the Result view.")
    floor: float = setting(0.3, label="Floor (x Otsu)", low=0.0, high=1.0, step=0.05,
                           help="Pixels must also exceed this fraction of the global Otsu threshold; keeps empty "
                                "areas empty.")  # 0 = off
    blur_sigma: float = setting(2.0, label="Blur sigma (px)", low=0.5, high=20.0, step=0.5,
                                help="Gaussian blur before Otsu.")  # otsu_gaussian
    invert: bool = setting(False, label="Invert (dark objects)", help="For dark cells on a bright background.")

    def validate(self) -> None:
        check_fields(self, self.step)
        _check(self.block_size % 2 == 1 or self.block_size == 0,
               f"threshold.block_size must be 0 (auto) or odd; got {self.block_size}")


@dataclass(frozen=True)
class CannyStep:
    step: ClassVar[str] = "canny"
    enabled: bool = setting(False, label="Canny edges", help="cv.Canny on the denoised image; shown as a view.")
    # hysteresis thresholds, normalised gradient units
    low: float = setting(0.1, label="Hysteresis thresholds", low=0.0, high=1.0, step=0.01,
                         help="Edges above the high value start a contour; connected ones above the low value extend it.")
    high: float = setting(0.3, label="Hysteresis thresholds", low=0.0, high=1.0, step=0.01,
                          help="Edges above the high value start a contour; connected ones above the low value extend it.")
    aperture: int = setting(3, label="Aperture", options=(3, 5, 7), kind="choice", help="Sobel kernel size.")
    l2_gradient: bool = setting(True, label="L2 gradient", help="Exact gradient magnitude (slower).")
    cut_mask: bool = setting(False, label="Cut the mask along edges",
                             help="Removes edge pixels from the foreground: can separate touching cells.")

    def validate(self) -> None:
        check_fields(self, self.step)
        _check(self.low < self.high, "canny needs 0 <= low < high")


@dataclass(frozen=True)
class MorphologyStep:
    step: ClassVar[str] = "morphology"
    operation: str = setting("open", label="Operation", options=MORPH_OPS,
                             help="open: removes specks and thin bridges. close: fills small gaps. erode/dilate: "
                                  "shrink/grow.")
    ksize: int = setting(3, label="Kernel size", low=1, high=51, step=2, help="Odd size in pixels.")
    shape: str = setting("ellipse", label="Kernel shape", options=KERNEL_SHAPES, help="Structuring element shape.")
    iterations: int = setting(1, label="Iterations", low=1, high=10, step=1, help="Repeat the operation.")
    fill_holes: bool = setting(True, label="Fill holes", help="Fill background enclosed by a cell.")

    def validate(self) -> None:
        check_fields(self, self.step)  # OpenCV takes even kernels too; the slider offers odd ones


@dataclass(frozen=True)
class WatershedStep:
    step: ClassVar[str] = "watershed"
    enabled: bool = setting(True, label="Watershed", help="Distance transform + watershed: one seed per distance peak "
                            "splits touching cells.")
    seed_distance: int = setting(0, label="Seed distance (px, 0 = auto)", low=0, high=200, step=1,
                                 help="Minimum distance between seeds: larger merges, smaller splits. 0 = half the "
                                      "typical cell radius.")
    smoothing: float = setting(1.0, label="Smoothing", low=0.0, high=10.0, step=0.5,
                               help="Blur of the distance map; removes spurious seeds on irregular cells.")

    def validate(self) -> None:
        check_fields(self, self.step)


@dataclass(frozen=True)
class FilterStep:
    step: ClassVar[str] = "filters"
    min_area: int = setting(-1, label="Minimum area (px, -1 = auto)", low=0, high=100_000, step=5, special=(-1,),
                            help="Smaller objects are dropped. -1 = a fifth of the typical cell area.")
    max_area: int = setting(0, label="Maximum area (px, 0 = off)", low=0, high=10_000_000, step=100,
                            help="Larger objects (clumps, debris) are dropped.")
    remove_border: bool = setting(False, label="Remove cells touching the border",
                                  help="Cut-off cells bias size and intensity measurements.")

    def validate(self) -> None:
        check_fields(self, self.step)
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
