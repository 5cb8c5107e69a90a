"""The GPU input path (`train.input: gpu`, vidssl.train.gpu_input) run on the CPU against the CPU
path (vidssl.train.data): the same presets, checked against the presets' documented ranges and
against frames whose pixels encode their own coordinates, so a view tells where it was cropped
from; a tiny real training run with `input: gpu`; PiCo refused with a clear error."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from tests.conftest import build_experiment
from vidssl.clips import frame_name
from vidssl.config import ConfigError, TrainConfig
from vidssl.stages import clean, ingest, synth, train
from vidssl.store import open_store
from vidssl.train import gpu_input
from vidssl.train.augment import CROP_SCALES, GRAYSCALE_P, IMAGENET_MEAN, IMAGENET_STD
from vidssl.train.data import TrainingExamples
from vidssl.train.gpu_input import EncodedExamples, GpuViews, collate_encoded

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec (not installed here)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

WIDTH, HEIGHT, SIZE, BATCH = 160, 120, 32, 8
#: The object box of every frame (normalised); its shared window is the square
#: x 32..112, y 20..100 (centre (72, 60), side max(0.5 * 160, 0.6 * 120) = 80).
BOX = [0.2, 0.2, 0.7, 0.8]
WINDOW = (32, 20, 112, 100)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _jpeg(rgb: np.ndarray) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 100]
    params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    return data.tobytes()


def _coordinate_frame() -> np.ndarray:
    """Red = column x * 255 / (W - 1), green = row y * 255 / (H - 1), blue 128."""
    red = np.tile(np.linspace(0, 255, WIDTH), (HEIGHT, 1))
    green = np.tile(np.linspace(0, 255, HEIGHT)[:, None], (1, WIDTH))
    return np.stack([red, green, np.full_like(red, 128)], -1).round().astype(np.uint8)


def _sample(frame: np.ndarray, box: list[float] = BOX) -> tuple[dict, dict]:
    data = _jpeg(frame)
    meta = {"num_frames": 2, "frames": [{"crop_box": box}, {"crop_box": box}]}
    return {"__key__": "clip", "__url__": "test://", frame_name(0): data, frame_name(1): data}, meta


def _config(augmentation: str, **fields) -> TrainConfig:
    return TrainConfig(
        augmentation=augmentation,
        image_size=SIZE,
        batch_size=BATCH,
        sampler={"kind": "pairs", "examples_per_clip": 1},
        **fields,
    )


def _cpu_views(cfg: TrainConfig, examples: int, sample: tuple, seed: int, geometry_only=False):
    """(examples, 2 views, 3, S, S) uint8 from the CPU path, and torchvision's crop parameters
    of each view (recorded as its RandomResizedCrop draws them) when `geometry_only`."""
    dataset = TrainingExamples("file:///unused", "unused", cfg, epoch=0)
    drawn: list[dict] = []
    if geometry_only:  # the preset's geometric transforms alone: its crop (and flip)
        crop, *rest = dataset.transform.transforms
        flips = [t for t in rest if isinstance(t, v2.RandomHorizontalFlip)]
        draw = crop.make_params

        def recording(flat_inputs):  # type: ignore[no-untyped-def]
            params = draw(flat_inputs)
            drawn.append(params)
            return params

        crop.make_params = recording
        dataset.transform = v2.Compose([crop, *flips])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    views = [dataset.example(*sample, [0, 1], generator) for _ in range(examples)]
    stacked = torch.stack([torch.stack([v["first"], v["second"]]) for v in views])
    return stacked.float(), drawn


def _gpu_views(cfg: TrainConfig, examples: int, sample: tuple, seed: int):
    """(examples, 2, 3, S, S) in [0, 255], the crop boxes (examples, 2, 4) and flips."""
    dataset = EncodedExamples("file:///unused", "unused", cfg, epoch=0)
    generator = torch.Generator().manual_seed(seed)
    views = GpuViews(cfg, "cpu", seed=seed)
    images, boxes, flips = [], [], []
    for _ in range(examples // BATCH):
        batch = collate_encoded([dataset.example(*sample, [0, 1], generator) for _ in range(BATCH)])
        named, box, flip = views.views_with_geometry(batch)
        images.append(torch.stack([named["first"], named["second"]], dim=1))
        boxes.append(box)
        flips.append(flip)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    return torch.cat(images) * std + mean, torch.cat(boxes), torch.cat(flips)


def _read_back(view: torch.Tensor) -> tuple[list[float], bool]:
    """The crop box (x0, y0, x1, y1 frame pixels, pixel j spanning [j, j + 1)) and mirroring
    of a view of `_coordinate_frame`, from a straight-line fit of its red values along the row
    and its green values down the column (the central 3/4, away from resampling's borders)."""
    inner = slice(SIZE // 8, SIZE - SIZE // 8)
    index = torch.arange(SIZE, dtype=torch.float64)[inner]

    def fit(profile: torch.Tensor, extent: int) -> tuple[float, float, float]:
        slope, intercept = np.polyfit(index.numpy(), profile[inner].double().numpy(), 1)
        pixels = (extent - 1) / 255  # frame pixels per colour level
        side = abs(slope) * pixels * SIZE
        # output pixel j samples the frame at start + (j + 0.5) * side / SIZE (pixel edges),
        # i.e. pixel-centre coordinate value * pixels; a mirrored view reads from the far end
        j = 0 if slope > 0 else SIZE - 1
        start = (intercept + slope * j) * pixels + 0.5 - 0.5 * side / SIZE
        return start, side, slope

    x0, width, slope = fit(view[0].mean(dim=0), WIDTH)
    y0, height, _ = fit(view[1].mean(dim=1), HEIGHT)
    return [x0, y0, x0 + width, y0 + height], slope < 0


def _cpu_box(params: dict, flipped: bool) -> list[float]:
    """A CPU view's crop box in frame pixels from torchvision's parameters (drawn in the
    window, after the example's flip)."""
    wx0, wy0, wx1, _ = WINDOW
    left, top = params["left"], params["top"]
    if flipped:
        left = (wx1 - wx0) - left - params["width"]
    x0, y0 = wx0 + left, wy0 + top
    return [x0, y0, x0 + params["width"], y0 + params["height"]]


def _scale_and_ratio(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    window_area = (WINDOW[2] - WINDOW[0]) * (WINDOW[3] - WINDOW[1])
    return (width * height / window_area).ravel(), (width / height).ravel()


@pytest.mark.parametrize("preset", ["full", "lc_px"])
def test_both_paths_crop_and_flip_within_the_preset_and_where_the_box_says(monkeypatch, preset):
    """Photometric ops off: each view of the coordinate frame is the resampled crop box, on
    the GPU path the box it reports, on the CPU path the one torchvision drew; boxes inside
    the object window, their area share and aspect within the preset's ranges; one flip per
    example (both views alike), half of the examples flipped."""
    monkeypatch.setattr(gpu_input, "pixel_augment", lambda images, generator: images)
    cfg = _config(preset, input="gpu")
    sample = _sample(_coordinate_frame())
    examples = 96
    gpu, gpu_boxes, gpu_flips = _gpu_views(cfg, examples, sample, seed=1)
    cpu, cpu_params = _cpu_views(cfg, examples, sample, seed=2, geometry_only=True)
    read_gpu = [[_read_back(view) for view in pair] for pair in gpu]
    read_cpu = [[_read_back(view) for view in pair] for pair in cpu]
    gpu_read = np.array([[box for box, _ in pair] for pair in read_gpu])
    cpu_read = np.array([[box for box, _ in pair] for pair in read_cpu])
    cpu_flips = np.array([[flip for _, flip in pair] for pair in read_cpu])
    cpu_boxes = np.array(
        [
            [_cpu_box(cpu_params[2 * e + v], cpu_flips[e, 0]) for v in range(2)]
            for e in range(examples)
        ]
    )
    gpu_error = np.abs(gpu_read - gpu_boxes.numpy()).max()
    cpu_error = np.abs(cpu_read - cpu_boxes).max()
    assert gpu_error < 0.4, gpu_error  # pixels, of crops 35-80 px wide (measured: < 0.2)
    assert cpu_error < 0.4, cpu_error
    assert np.array_equal([[f for _, f in pair] for pair in read_gpu], gpu_flips.numpy())
    scale, ratio = CROP_SCALES[preset]
    for path, boxes, flips in (("gpu", gpu_boxes.numpy(), gpu_flips.numpy()),
                               ("cpu", cpu_boxes, cpu_flips)):  # fmt: skip
        assert (boxes[..., :2] >= np.array(WINDOW[:2])).all(), path
        assert (boxes[..., 2:] <= np.array(WINDOW[2:])).all(), path
        area, aspect = _scale_and_ratio(boxes)
        rounding = 2 / (WINDOW[2] - WINDOW[0])  # box sides are whole pixels
        assert area.min() >= scale[0] - 2 * rounding and area.max() <= scale[1], path
        assert area.max() - area.min() > 0.6 * (scale[1] - scale[0]), path  # the range is used
        assert aspect.min() >= ratio[0] * (1 - rounding), path
        assert aspect.max() <= ratio[1] * (1 + rounding), path
        assert (flips[:, 0] == flips[:, 1]).all(), path  # one decision per example
        assert abs(flips[:, 0].mean() - 0.5) < 4 * math.sqrt(0.25 / examples), path
    # the two paths' draws follow one distribution: means within 4 standard errors
    for gpu_values, cpu_values in zip(
        _scale_and_ratio(gpu_boxes.numpy()), _scale_and_ratio(cpu_boxes), strict=True
    ):
        gpu_values, cpu_values = np.log(gpu_values), np.log(cpu_values)
        error = math.sqrt(gpu_values.var() / gpu_values.size + cpu_values.var() / cpu_values.size)
        assert abs(gpu_values.mean() - cpu_values.mean()) <= 4 * error + 1e-9


def test_mocov2_flips_each_view_on_its_own_on_both_paths(monkeypatch):
    """MoCo-v2's extra flip per view: each view mirrored half the time, the two views of an
    example alike only half the time (the other presets: always, tested above)."""
    monkeypatch.setattr(gpu_input, "pixel_augment", lambda images, generator: images)
    cfg = _config("mocov2", input="gpu")
    sample = _sample(_coordinate_frame())
    examples = 64
    _, _, gpu_flips = _gpu_views(cfg, examples, sample, seed=3)
    cpu, _ = _cpu_views(cfg, examples, sample, seed=4, geometry_only=True)
    cpu_flips = np.array([[_read_back(view)[1] for view in pair] for pair in cpu])
    for path, flips in (("gpu", gpu_flips.numpy()), ("cpu", cpu_flips)):
        agree = (flips[:, 0] == flips[:, 1]).mean()
        assert abs(agree - 0.5) < 4 * math.sqrt(0.25 / examples), path
        assert abs(flips.mean() - 0.5) < 4 * math.sqrt(0.25 / flips.size), path


def test_a_window_leaving_the_frame_repeats_its_edge_on_both_paths(monkeypatch):
    """A tall box at the left edge: its square window (x -34..50, y 24..108) leaves the frame;
    with `px` (the whole window) and photometric ops off, both paths' views equal the window
    of the edge-padded frame shrunk by OpenCV's area filter (or its mirror image)."""
    monkeypatch.setattr(gpu_input, "pixel_augment", lambda images, generator: images)
    cfg = _config("px", input="gpu")
    frame = _coordinate_frame()
    sample = _sample(frame, [0.0, 0.2, 0.1, 0.9])
    gpu, gpu_boxes, gpu_flips = _gpu_views(cfg, BATCH, sample, seed=7)
    cpu, _ = _cpu_views(cfg, BATCH, sample, seed=8, geometry_only=True)
    assert (gpu_boxes == torch.tensor([-34.0, 24.0, 50.0, 108.0])).all()
    pad = 40
    padded = np.pad(frame.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    window = padded[24 + pad : 108 + pad, -34 + pad : 50 + pad]
    reference = cv2.resize(window, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    reference = torch.from_numpy(reference).permute(2, 0, 1)
    for e in range(BATCH):
        for v in range(2):
            expected = reference.flip(-1) if gpu_flips[e, v] else reference
            assert (gpu[e, v] - expected).abs().max() < 2.5  # levels of 255 (measured: 1.0)
            closest = min((cpu[e, v] - r).abs().max() for r in (reference, reference.flip(-1)))
            assert closest < 2.5  # measured: 1.3


def test_normalised_views_have_the_same_channel_statistics_on_both_paths():
    """Full preset, photometric ops on, 320 views a path of a colourful frame: per channel,
    the mean over views of each view's mean and of its standard deviation agree within 4
    standard errors (the paths draw independently), so does the spread of the views' means
    (what colour jitter widens); a fifth of the views grey, as the preset's p = 0.2 says."""
    cfg = _config("full", input="gpu")
    rng = np.random.default_rng(0)
    frame = _coordinate_frame()
    texture = cv2.GaussianBlur(rng.random((HEIGHT, WIDTH)), (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    frame[..., 2] = (texture * 255).round().astype(np.uint8)  # blue: blotches
    sample = _sample(frame)
    examples = 160
    gpu, _, _ = _gpu_views(cfg, examples, sample, seed=5)
    cpu, _ = _cpu_views(cfg, examples, sample, seed=6)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    for path, views in (("gpu", gpu), ("cpu", cpu)):
        assert views.min() >= -0.5 and views.max() <= 255.5, path
    normalised = {path: ((views - mean) / std).flatten(0, 1) for path, views in
                  (("gpu", gpu), ("cpu", cpu))}  # fmt: skip
    for channel in range(3):
        view_means = {p: v[:, channel].mean(dim=(1, 2)) for p, v in normalised.items()}
        view_stds = {p: v[:, channel].std(dim=(1, 2)) for p, v in normalised.items()}
        for name, values in (("mean", view_means), ("std", view_stds)):
            gpu_values, cpu_values = values["gpu"], values["cpu"]
            error = math.sqrt(
                gpu_values.var() / len(gpu_values) + cpu_values.var() / len(cpu_values)
            )
            gap = abs(float(gpu_values.mean() - cpu_values.mean()))
            assert gap < 4 * error, (channel, name, gap, error)
        spreads = [float(view_means[p].std()) for p in ("gpu", "cpu")]
        error = math.sqrt(sum(spread**2 / (2 * 2 * examples) for spread in spreads))
        assert abs(spreads[0] - spreads[1]) < 4 * error, (channel, spreads, error)
    for path, views in (("gpu", gpu), ("cpu", cpu)):
        views = views.flatten(0, 1)
        grey = (views.amax(dim=1) - views.amin(dim=1)).amax(dim=(1, 2)) < 1.5
        rate = float(grey.float().mean())
        assert abs(rate - GRAYSCALE_P) < 4 * math.sqrt(GRAYSCALE_P * 0.8 / len(grey)), (path, rate)


def _clips(experiment) -> str:  # type: ignore[no-untyped-def]
    """synth -> ingest -> clean, as tests/test_training.py prepares its clips."""
    raw = synth.raw_url(synth.run(experiment))
    return clean.run(experiment, ingest.run(experiment, source_url=raw).url).url


def test_a_tiny_training_run_with_gpu_input_trains_and_resumes_exactly(tmp_path):
    """The real trainer with `train.input: gpu` (one loader worker handing over JPEG bytes,
    views made in the training process) on the tiny Objectron-format clips: a finite loss, and
    a run stopped after step 4 and resumed ends with the weights of an uninterrupted one."""
    finals = []
    for name, interrupt in (("straight", None), ("resumed", 4)):
        experiment = build_experiment(
            f"file://{tmp_path / name}", train__input="gpu", train__loader_workers=1
        )
        clips_url = _clips(experiment)
        if interrupt:
            assert train.run(experiment, clips_url, stop_after_step=interrupt).manifest is None
        output = train.run(experiment, clips_url)
        history = output.manifest.details["history"]
        assert output.manifest.details["steps"] == 6 and len(history) == 2
        assert all(math.isfinite(record["loss"]) for record in history)
        assert all(record["collapse_std"] > 0 for record in history)
        store = open_store(f"file://{tmp_path / name}")
        model = store.get(store.key_of(output.model_url))
        finals.append(torch.load(io.BytesIO(model), weights_only=False)["encoder"])
    for key, value in finals[0].items():
        assert torch.equal(value, finals[1][key]), key


def test_pico_with_gpu_input_is_a_clear_config_error(tmp_path):
    experiment = build_experiment(
        f"file://{tmp_path}",
        {"train": {"method": {"kind": "pico"}, "sampler": {"kind": "pixel_pairs"}}},
        train__input="gpu",
    )
    cfg = experiment.train
    with pytest.raises(ConfigError, match=r"train\.input: gpu .*train\.sampler pixel_pairs"):
        GpuViews(cfg, "cpu")
    with pytest.raises(ConfigError, match=r"train\.input: gpu"):
        EncodedExamples(f"file://{tmp_path}", "clips", cfg, epoch=0)
