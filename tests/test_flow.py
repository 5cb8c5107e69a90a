"""Flow estimators, the flow codec and `vidssl flow pair`, checked against flow known by
construction: an image is warped by a known smooth motion with `cv2.remap`, so the true flow at
every pixel is the motion itself, not another estimator's opinion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.models.optical_flow import Raft_Small_Weights, raft_small
from typer.testing import CliRunner

from vidssl import cli
from vidssl.errors import InputError
from vidssl.flow.codec import (
    bytes_to_flow,
    decode_flow,
    encode_flow,
    flow_to_bytes,
    quantisation_step,
)
from vidssl.flow.estimators import ESTIMATORS, build_estimator

from .conftest import OPENCV_SAMPLES

HEIGHT, WIDTH = 240, 320
#: Pixels left out at each border: there the warped image repeats reflected content that the
#: motion did not bring in, so no estimator can know the flow.
MARGIN = 24


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 smooth noise at three scales (1, 3 and 8 px): texture everywhere, no flat
    regions, so the flow is determined at every pixel."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((1.0, 0.5), (3.0, 1.0), (8.0, 1.0)):
        blurred = cv2.GaussianBlur(
            rng.standard_normal((height, width, 3)).astype(np.float32), (0, 0), sigma
        )
        image += weight * blurred / blurred.std()
    image = (image - image.min()) / (image.max() - image.min()) * 255.0
    return image.astype(np.uint8)


def real_frame() -> np.ndarray:
    """The first frame of OpenCV's vtest.avi (a street scene with flat walls and floor), RGB,
    resized to (HEIGHT, WIDTH)."""
    path = OPENCV_SAMPLES / "opencv" / "vtest.avi"
    if not path.exists():
        pytest.skip(f"{path} is missing: run `make data` to fetch OpenCV's sample videos")
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    capture.release()
    assert ok, f"{path}: no first frame"
    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def similarity(angle_deg: float = 2.0, scale: float = 1.02, shift=(3.5, -2.0)):
    """(A, c, t): the motion x -> A (x - c) + c + t about the image centre c, in pixels."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([(WIDTH - 1) / 2, (HEIGHT - 1) / 2])
    return scale * rotation, centre, np.asarray(shift, float)


def motion_flow(matrix: np.ndarray, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The flow (HEIGHT, WIDTH, 2), (dx, dy) pixels, of x -> matrix (x - c) + c + shift."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    points = np.stack([xs, ys], axis=-1)
    moved = (points - centre) @ matrix.T + centre + shift
    return (moved - points).astype(np.float32)


def forward_and_backward_truth() -> tuple[np.ndarray, np.ndarray]:
    """The true flow of `similarity()` from the first frame to the second, and the true flow
    back (the inverse motion), both (HEIGHT, WIDTH, 2)."""
    matrix, centre, shift = similarity()
    inverse = np.linalg.inv(matrix)
    return motion_flow(matrix, centre, shift), motion_flow(inverse, centre, -inverse @ shift)


def warped_pair(later: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, later) with earlier(x) = later(x + flow(x)): the flow from `earlier` to `later`
    is exactly `flow`."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    earlier = cv2.remap(
        later,
        xs + flow[..., 0],
        ys + flow[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )
    return earlier, later


def interior_epe(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """End-point error (pixels) at each interior pixel."""
    error = np.linalg.norm(estimate - truth, axis=-1)
    return error[MARGIN:-MARGIN, MARGIN:-MARGIN]


# Measured on this machine (OpenCV 5.0): generated texture, DIS mean 0.054 / p95 0.107 px,
# Farneback 0.067 / 0.132; vtest frame, DIS 0.105 / 0.229, Farneback 0.244 / 0.707 (its flat
# walls are where Farneback strays). The true motion averages 6 px, up to 10.8 px.
#: (image, method) -> (mean EPE bound, 95th-percentile EPE bound), pixels, about twice measured.
EPE_BOUNDS = {
    ("generated", "dis"): (0.12, 0.25),
    ("generated", "farneback"): (0.15, 0.3),
    ("vtest", "dis"): (0.25, 0.5),
    ("vtest", "farneback"): (0.5, 1.4),
}


@pytest.mark.parametrize(("image", "method"), sorted(EPE_BOUNDS))
def test_classical_estimators_recover_a_known_motion(image, method):
    later = textured_image(HEIGHT, WIDTH) if image == "generated" else real_frame()
    truth, _ = forward_and_backward_truth()
    earlier, later = warped_pair(later, truth)
    flow = build_estimator(method)(earlier[None], later[None])
    assert flow.shape == (1, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    epe = interior_epe(flow[0], truth)
    mean_bound, p95_bound = EPE_BOUNDS[image, method]
    assert np.linalg.norm(truth, axis=-1).mean() > 5.0  # a zero flow would fail by far
    assert epe.mean() < mean_bound, f"{method} on {image}: mean EPE {epe.mean():.3f} px"
    assert np.percentile(epe, 95) < p95_bound, (
        f"{method} on {image}: 95th percentile EPE {np.percentile(epe, 95):.3f} px"
    )


def test_forward_backward_gives_both_directions_in_clip_order():
    forward_truth, backward_truth = forward_and_backward_truth()
    first, second = warped_pair(textured_image(HEIGHT, WIDTH, seed=1), forward_truth)
    clip = np.stack([first, second, first])  # there and back again
    forward, backward = build_estimator("dis").forward_backward(clip)
    assert forward.shape == backward.shape == (2, HEIGHT, WIDTH, 2)
    expected = {
        "forward 0->1": (forward[0], forward_truth),
        "forward 1->2": (forward[1], backward_truth),
        "backward 1->0": (backward[0], backward_truth),
        "backward 2->1": (backward[1], forward_truth),
    }
    for name, (estimate, truth) in expected.items():
        epe = interior_epe(estimate, truth)
        assert epe.mean() < 0.12, f"{name}: mean EPE {epe.mean():.3f} px"


def test_estimator_inputs_and_registry_are_checked(tmp_path):
    dis = build_estimator("dis", preset="fast")
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="uint8"):
        dis(frames.astype(np.float32), frames)
    with pytest.raises(InputError, match="differ in shape"):
        dis(frames, frames[:1])
    with pytest.raises(InputError, match="at least 2 frames"):
        dis.forward_backward(frames[:1])
    assert dis(frames[:0], frames[:0]).shape == (0, 16, 16, 2)
    assert set(ESTIMATORS) == {"dis", "farneback", "raft_small", "raft_large"}
    with pytest.raises(InputError, match=r"'pwc'.*expected one of"):
        build_estimator("pwc")
    with pytest.raises(InputError, match="dis takes no weights"):
        build_estimator("dis", weights=tmp_path / "raft.pth")
    with pytest.raises(InputError, match="DIS preset 'slow'"):
        build_estimator("dis", preset="slow")
    with pytest.raises(InputError, match=r"farneback.*levles"):
        build_estimator("farneback", levles=3)


@pytest.fixture(scope="module")
def raft_small_weights(tmp_path_factory) -> str:
    """A randomly initialised RAFT-small saved as a state dict: the real weights cannot be
    downloaded, so the RAFT tests check plumbing (normalisation, padding, batching, order), not
    accuracy."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return str(path)


def test_raft_matches_torchvision_and_pads_and_batches(raft_small_weights):
    estimator = build_estimator(
        "raft_small", raft_small_weights, device="cpu", num_flow_updates=2, batch_size=1
    )
    clip = np.stack([textured_image(128, 144, seed) for seed in range(2)])
    forward, backward = estimator.forward_backward(clip)  # 2 pairs, in batches of 1

    # The reference: torchvision's own model and transforms, both pairs in one batch.
    reference = raft_small(weights=None).eval()
    reference.load_state_dict(torch.load(raft_small_weights, weights_only=True))
    images = torch.from_numpy(clip).permute(0, 3, 1, 2)
    earlier, later = Raft_Small_Weights.DEFAULT.transforms()(images, images.flip(0))
    with torch.inference_mode():
        expected = reference(earlier, later, num_flow_updates=2)[-1].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.concatenate([forward, backward]), expected, atol=1e-3)
    assert np.abs(expected).mean() > 0.1  # random weights still give a non-trivial flow
    # Same input, same output.
    np.testing.assert_array_equal(estimator(clip[:1], clip[1:]), forward)

    # 120 x 141 is padded to 128 x 144 (rows 4 + 4, columns 1 + 2, edge pixels repeated) and
    # cropped back: the same as running on frames padded by hand and cropping ourselves.
    assert estimator.padding(120, 141) == (1, 2, 4, 4)
    assert estimator.padding(60, 77) == (25, 26, 34, 34)  # up to the 128 px RAFT needs
    small = clip[:, 4:124, 1:142]
    by_hand = np.pad(small, ((0, 0), (4, 4), (1, 2), (0, 0)), mode="edge")
    cropped = estimator(small[:1], small[1:])
    assert cropped.shape == (1, 120, 141, 2) and cropped.dtype == np.float32
    np.testing.assert_allclose(
        cropped, estimator(by_hand[:1], by_hand[1:])[:, 4:124, 1:142], atol=1e-4
    )


def test_raft_weights_come_from_a_local_file_only(raft_small_weights, tmp_path):
    with pytest.raises(InputError, match=r"needs a local weights file.*nothing is downloaded"):
        build_estimator("raft_small")
    missing = tmp_path / "raft_large_C_T_SKHT_V2.pth"
    with pytest.raises(InputError, match=f"{missing}: no such raft_large weights file"):
        build_estimator("raft_large", missing)
    with pytest.raises(InputError, match="not raft_large weights"):
        build_estimator("raft_large", raft_small_weights, device="cpu")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch state dict"):
        build_estimator("raft_small", garbage)
    with pytest.raises(InputError, match="precision 'fp8'"):
        build_estimator("raft_small", raft_small_weights, precision="fp8")


def smooth_random_flow(seed: int, amplitude: float) -> np.ndarray:
    """A smooth random flow field (blurred noise at a 20 px scale), |u|, |v| <= amplitude."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((HEIGHT, WIDTH, 2)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 20)
    return blurred / np.abs(blurred).max() * amplitude


def test_quantisation_alone_errs_by_at_most_half_a_step():
    bound = 20.0
    values = np.linspace(-bound, bound, 10_001, dtype=np.float32)
    levels = flow_to_bytes(values, bound)
    assert levels.dtype == np.uint8 and levels[0] == 0 and levels[-1] == 255
    error = np.abs(bytes_to_flow(levels, bound) - values)
    assert error.max() <= quantisation_step(bound) / 2 + 1e-5


# Measured at bound 20, quality 95 (step 0.157 px): the similarity flow, mean 0.042 / max
# 0.208 px; smooth random flow (+-15 px), 0.044 / 0.235 px. Rounding alone averages step / 4 =
# 0.039 px, so JPEG adds ~0.005 px on average and up to ~1 step at worst on smooth flow.
def test_codec_round_trip_error_on_smooth_flow_is_bounded():
    bound, quality = 20.0, 95
    step = quantisation_step(bound)
    flows = {
        "similarity": forward_and_backward_truth()[0],
        "smooth random": smooth_random_flow(seed=1, amplitude=15.0),
    }
    for name, flow in flows.items():
        bytes_u, bytes_v = encode_flow(flow, bound, quality)
        assert bytes_u[:2] == bytes_v[:2] == b"\xff\xd8"  # JPEG start-of-image
        decoded = decode_flow(bytes_u, bytes_v, bound)
        assert decoded.shape == flow.shape and decoded.dtype == np.float32
        error = np.abs(decoded - flow)
        assert error.mean() < step / 4 + 0.02, f"{name}: mean error {error.mean():.4f} px"
        assert error.max() < 2 * step, f"{name}: max error {error.max():.4f} px"


def test_codec_at_motion_boundaries_and_beyond_the_bound():
    bound = 20.0
    step = quantisation_step(bound)
    # A rectangle moving (8, -5) px over a still background: JPEG rings at its edges
    # (measured: mean 0.077, max 0.549 px = 3.5 steps).
    boundary = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    boundary[60:180, 100:220] = (8.0, -5.0)
    error = np.abs(decode_flow(*encode_flow(boundary, bound), bound) - boundary)
    assert error.mean() < step / 2 and error.max() < 5 * step
    # A ramp from -40 to +40 px: beyond +-20 it reads back as +-20.
    ramp = np.broadcast_to(
        np.linspace(-40, 40, WIDTH, dtype=np.float32)[None, :, None], (64, WIDTH, 2)
    )
    decoded = decode_flow(*encode_flow(ramp, bound), bound)
    assert decoded.min() >= -bound - 1e-4 and decoded.max() <= bound + 1e-4
    beyond = np.abs(ramp) > bound + 2
    np.testing.assert_allclose(decoded[beyond], np.sign(ramp[beyond]) * bound, atol=step)
    within = np.abs(ramp) < bound - 2
    assert np.abs(decoded[within] - ramp[within]).max() < 2 * step


def test_codec_rejects_bad_input():
    flow = np.zeros((8, 8, 2), np.float32)
    with pytest.raises(InputError, match=r"shape \(H, W, 2\)"):
        encode_flow(flow[..., 0])
    with pytest.raises(InputError, match="NaN"):
        encode_flow(np.full_like(flow, np.nan))
    with pytest.raises(InputError, match="quality 0"):
        encode_flow(flow, quality=0)
    with pytest.raises(InputError, match="bound -1"):
        encode_flow(flow, bound=-1)
    bytes_u, bytes_v = encode_flow(flow)
    with pytest.raises(InputError, match="component v: not a decodable JPEG"):
        decode_flow(bytes_u, b"garbage")
    other_u, _ = encode_flow(np.zeros((8, 16, 2), np.float32))
    with pytest.raises(InputError, match="differ in size"):
        decode_flow(other_u, bytes_v)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_cli_flow_pair_writes_the_raw_flow(method, tmp_path):
    truth, _ = forward_and_backward_truth()
    earlier, later = warped_pair(textured_image(HEIGHT, WIDTH, seed=2), truth)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(paths, (earlier, later), strict=True):
        assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out" / "flow.npy"
    result = CliRunner().invoke(
        cli.app, ["flow", "pair", *map(str, paths), "--method", method, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    flow = np.load(out)
    assert flow.shape == (HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    epe = interior_epe(flow, truth)
    assert epe.mean() < EPE_BOUNDS["generated", method][0], f"mean EPE {epe.mean():.3f} px"


def test_cli_flow_pair_errors_are_one_line(tmp_path, capsys):
    image = textured_image(72, 90, seed=3)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        cv2.imwrite(str(path), image)
    out = tmp_path / "flow.npy"
    pair = ["flow", "pair", *map(str, paths), "--out", str(out)]
    absent = tmp_path / "absent.pth"
    with pytest.raises(SystemExit) as exit_info:  # the entry point users run
        cli.run([*pair, "--method", "raft_small", "--weights", str(absent)])
    assert exit_info.value.code == 2
    assert f"{absent}: no such raft_small weights file" in capsys.readouterr().err
    cv2.imwrite(str(paths[1]), image[:64])
    with pytest.raises(SystemExit):
        cli.run(pair)
    assert "sizes differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.run(["flow", "pair", str(paths[0]), str(tmp_path / "nothing.png"), "--out", str(out)])
    assert "nothing.png: not a readable image" in capsys.readouterr().err
    assert not out.exists()
