"""PiCo's model and loss on tensors: the dense encoder's output, sampling embeddings at points
(exact on a hand-made map), pixel InfoNCE, the method's batch contract, its momentum encoder,
frozen ResNet and queue, loading the ResNet from a local checkpoint, and its config section."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vidssl.config import ConfigError, PicoMethodConfig, parse_experiment
from vidssl.train.backbones import build_backbone
from vidssl.train.dense import DenseEncoder, load_body_weights
from vidssl.train.losses import pixel_info_nce, same_point_mask, sample_features
from vidssl.train.methods import build_method, total_loss
from vidssl.train.methods.pico import BATCH_KEYS, fixed_count, point_pairs

SIZE = 64  # input side: a 16 x 16 embedding map


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a machine shared with other jobs, two threads waiting for each
    other made these tests up to 4x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pico(**fields):  # type: ignore[no-untyped-def]
    """PiCo on a ResNet-18, small head and queue, as build_method makes it from `train:`."""
    settings = {"hidden_dim": 64, "queue_size": 512, **fields}
    train = SimpleNamespace(backbone="resnet18", weights=None, method=PicoMethodConfig(**settings))
    torch.manual_seed(0)
    return build_method(train)


def _scene(seed: int) -> torch.Tensor:
    """A smooth random texture (3, 96, 96): the world the camera pans over."""
    noise = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(96, 96), mode="bilinear", align_corners=False)[0]


def _panning_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two examples; each anchor a 64 x 64 window of a scene, its K=2 views the window moved by
    (12, 8) and (-4, 10) px: a scene point at (x, y) in the anchor is at (x - dx, y - dy) in
    the view. Points on a grid inside every window; the last 5 slots of example 1 padding."""
    shifts = torch.tensor([[12.0, 8.0], [-4.0, 10.0]])
    anchors, views = [], []
    for example, (left, top) in enumerate([(16, 4), (20, 12)]):
        scene = _scene(seed + example)

        def window(x: int, y: int, scene: torch.Tensor = scene) -> torch.Tensor:
            return scene[:, y : y + SIZE, x : x + SIZE]

        anchors.append(window(left, top))
        views.append(torch.stack([window(left + int(dx), top + int(dy)) for dx, dy in shifts]))
    ys, xs = torch.meshgrid(torch.arange(18.0, 50, 5), torch.arange(18.0, 50, 5), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], 1)  # (P, 2), 7 x 7 points
    pairs = grid.shape[0]
    view_index = (torch.arange(pairs) % 2).expand(2, pairs).clone()
    anchor_xy = grid.expand(2, pairs, 2).clone()
    valid = torch.ones(2, pairs, dtype=torch.bool)
    valid[1, -5:] = False
    return {
        "anchor": torch.stack(anchors),
        "views": torch.stack(views),
        "anchor_xy": anchor_xy,
        "view_xy": anchor_xy - shifts[view_index],
        "view_index": view_index,
        "valid": valid,
    }


def _queue_of_real_pixels(model) -> None:  # type: ignore[no-untyped-def]
    """Fill the queue (93 keys) with key pixels of other scenes, as training would."""
    assert model.cfg.queue_size == 93
    with torch.no_grad():
        model(_panning_batch(seed=100))
    assert int(model.queue.pointer) == 0  # full: wrapped around once


# -- the dense encoder -------------------------------------------------------------------------


def test_dense_encoder_embeds_every_pixel_at_a_quarter_of_the_input_resolution():
    resnet, _ = build_backbone("resnet18")
    encoder = DenseEncoder(resnet, embedding_dim=128)
    assert encoder(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 128, SIZE // 4, SIZE // 4)
    assert encoder(torch.randn(1, 3, 72, 56)).shape == (1, 128, 18, 14)  # not multiples of 32
    # the semantic branch of Panoptic FPN: 1, 1, 2, 3 conv-GN-ReLU stages for P2..P5
    assert [len(stages) for stages in encoder.semantic.levels] == [1, 1, 2, 3]
    assert [p.shape[1] for p in encoder.pyramid(torch.randn(1, 3, SIZE, SIZE)).values()] == [
        256
    ] * 4


def test_the_frozen_resnet_keeps_its_weights_and_batch_norm_statistics_in_training():
    resnet, _ = build_backbone("resnet18")
    encoder = DenseEncoder(resnet, frozen_body=True).train()
    before = {k: v.clone() for k, v in encoder.body.state_dict().items()}
    encoder(torch.randn(2, 3, SIZE, SIZE) * 3 + 1).sum().backward()
    assert not encoder.body.training and encoder.fpn.training
    assert all(p.grad is None for p in encoder.body.parameters())
    assert all(p.grad is not None for p in encoder.semantic.parameters())
    assert all(torch.equal(before[k], v) for k, v in encoder.body.state_dict().items())


# -- sampling at points and the loss -----------------------------------------------------------


def test_sample_features_reads_cell_centres_exactly_and_interpolates_between_them():
    h, w = 4, 5
    rows, cols = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
    ramp = torch.stack([cols, 10 * rows])  # channel 0: the column, channel 1: 10 x the row
    feature_map = torch.stack([ramp, ramp + 100])  # image 1 is image 0 + 100
    points = torch.tensor(
        [
            [1.5, 1.5],  # centre of input pixels 0..3: cell (0, 0)
            [4 * 3 + 1.5, 4 * 2 + 1.5],  # cell (col 3, row 2)
            [3.5, 1.5],  # half-way between cells 0 and 1 of row 0
            [4 * 4 + 1.5, 4 * 1 + 1.5 + 1.0],  # a quarter of the way from row 1 to row 2
            [0.0, 0.0],  # the image corner: beyond the outer cell centres, the border cell
            [19.0, 15.0],  # the last pixel: cell (4, 3)
        ]
    )
    batch_index = torch.tensor([1, 0, 0, 1, 0, 1])  # unsorted on purpose
    expected = (
        torch.tensor([[0, 0], [3, 20], [0.5, 0], [4, 12.5], [0, 0], [4, 30]])
        + 100 * batch_index[:, None]
    )
    sampled = sample_features(feature_map, points, batch_index, stride=4)
    assert torch.allclose(sampled, expected, atol=1e-5)
    # a bf16 map (autocast) of a 224 px frame: a bf16 grid would read cell 37.0 here
    wide = torch.arange(56.0).expand(1, 1, 56, 56).to(torch.bfloat16)
    quarter = sample_features(wide, torch.tensor([[4 * 37 + 2.5, 9.5]]), torch.tensor([0]))
    assert quarter.dtype == torch.float32 and float(quarter) == pytest.approx(37.25, abs=1e-4)


def test_sample_features_is_bilinear_and_passes_the_gradient_to_the_map():
    torch.manual_seed(0)
    feature_map = torch.randn(3, 8, 6, 7, requires_grad=True)
    points = torch.rand(50, 2) * torch.tensor([4 * 6 - 3.0, 4 * 5 - 3.0]) + 1.5  # inner cells
    batch_index = torch.randint(3, (50,))
    sampled = sample_features(feature_map, points, batch_index, stride=4)
    u = (points + 0.5) / 4 - 0.5  # continuous cell index
    x0, y0 = u.floor().long().unbind(1)
    fx, fy = (u - u.floor()).unbind(1)
    m = feature_map.detach().permute(0, 2, 3, 1)  # (N, h, w, D)
    b = batch_index
    by_hand = (
        m[b, y0, x0] * ((1 - fx) * (1 - fy))[:, None]
        + m[b, y0, x0 + 1] * (fx * (1 - fy))[:, None]
        + m[b, y0 + 1, x0] * ((1 - fx) * fy)[:, None]
        + m[b, y0 + 1, x0 + 1] * (fx * fy)[:, None]
    )
    assert torch.allclose(sampled, by_hand, atol=1e-5)
    sampled.sum().backward()
    assert float(feature_map.grad.sum()) == pytest.approx(50 * 8, rel=1e-5)  # weights sum to 1


def test_pixel_info_nce_by_hand_and_a_batch_without_pairs():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # similarities 1 and 0
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    tau = 0.5
    first = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    second = -math.log(1 / (1 + math.exp(2) + 1))
    loss = pixel_info_nce(q, k, negatives, tau)
    assert float(loss) == pytest.approx((first + second) / 2, abs=1e-6)
    empty = torch.zeros(0, 2, requires_grad=True)
    nothing = pixel_info_nce(empty, empty.detach(), negatives, tau)
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad


def test_batch_negatives_by_hand_and_the_same_point_exclusion():
    """With `batch_exclusion` the other pairs' keys join the queue as negatives, except those
    excluded; excluding every one gives the queue-only loss."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    negatives = torch.tensor([[-1.0, 0.0]])
    tau = 0.5
    # pair 0 leaves pair 1 out (the same point); pair 2 sees both other keys
    exclusion = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])

    def term(positive: float, others: list[float]) -> float:
        logits = [positive, *others]
        return -logits[0] / tau + math.log(sum(math.exp(x / tau) for x in logits))

    by_hand = (
        term(1.0, [0.0, -1.0])  # q0: its key, k2, the queue
        + term(1.0, [-1.0, 0.0])  # q1: its key, k2, the queue
        + term(-0.8, [0.6, 0.8, -0.6])  # q2: its key, k0, k1, the queue
    ) / 3
    loss = pixel_info_nce(q, k, negatives, tau, batch_exclusion=exclusion)
    assert float(loss) == pytest.approx(by_hand, abs=1e-6)
    everything = torch.ones(3, 3, dtype=torch.bool)
    queue_only = pixel_info_nce(q, k, negatives, tau)
    assert float(pixel_info_nce(q, k, negatives, tau, everything)) == pytest.approx(
        float(queue_only), abs=1e-6
    )
    with pytest.raises(ValueError, match="True on its diagonal"):
        pixel_info_nce(q, k, negatives, tau, torch.zeros(3, 3, dtype=torch.bool))

    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    images = torch.tensor([0, 0, 0, 1])
    mask = same_point_mask(points, images, 4.0)
    assert mask.tolist() == [
        [True, True, False, False],  # 3 px away: the same point; 10 px: another
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],  # the same position in another image is a negative
    ]


def test_batch_negatives_reach_the_method_and_change_its_loss():
    batch = _panning_batch()
    losses = {}
    for batch_negatives in (False, True):
        model = _pico(queue_size=93, batch_negatives=batch_negatives)
        _queue_of_real_pixels(model)
        with torch.no_grad():
            losses[batch_negatives] = float(model(batch)[0]["pixel_info_nce"])
    # the same weights (seeded) and queue: more negatives, a larger loss
    assert losses[True] > losses[False] + 0.1, losses


# -- the method --------------------------------------------------------------------------------


def test_the_batch_contract_flattens_valid_pairs_to_anchor_and_view_images():
    batch = _panning_batch()
    anchor_xy, view_xy, anchor_image, view_image = point_pairs(batch)
    assert anchor_xy.shape == (49 + 44, 2) and view_xy.shape == (93, 2)
    assert anchor_image.tolist() == [0] * 49 + [1] * 44
    assert view_image[:4].tolist() == [0, 1, 0, 1] and view_image[49:51].tolist() == [2, 3]
    with pytest.raises(KeyError, match="lacks \\['valid'\\]"):
        point_pairs({k: v for k, v in batch.items() if k != "valid"})
    with pytest.raises(ValueError, match=r"view_index must lie in \[0, 2\)"):
        point_pairs({**batch, "view_index": batch["view_index"] + 1})
    assert PicoMethodConfig.views == BATCH_KEYS  # what the config promises the sampler reads


def test_true_correspondences_score_better_than_shuffled_ones_on_a_random_model():
    """An untrained network already embeds the same scene point alike in two windows of a
    panning camera: the loss of the true pairs is below that of the pairs shuffled among the
    same points (measured: ~5.0 against ~5.4 at tau 0.07 and log(93 + 1) = 4.5 chance)."""
    model = _pico(queue_size=93, temperature=0.07)
    _queue_of_real_pixels(model)
    saved = model.queue.keys.clone()
    batch = _panning_batch()
    order = torch.randperm(49, generator=torch.Generator().manual_seed(0))
    shuffled = dict(batch, view_xy=batch["view_xy"][:, order])
    with torch.no_grad():
        true_loss = float(model(batch)[0]["pixel_info_nce"])
        model.queue.keys.copy_(saved)
        shuffled_loss = float(model(shuffled)[0]["pixel_info_nce"])
    assert true_loss < shuffled_loss - 0.2, (true_loss, shuffled_loss)


@pytest.mark.parametrize("freeze", [True, False])
def test_a_few_steps_lower_the_loss_and_move_the_key_encoder_by_momentum(freeze):
    model = _pico(freeze_encoder=freeze, key_momentum=0.9, queue_size=93)
    _queue_of_real_pixels(model)
    negatives = model.queue.keys.clone()
    params = model.learnable_params()[0]["params"]
    trained = {id(p) for p in params}
    assert trained.isdisjoint(id(p) for p in model.key_encoder.parameters())
    assert (id(model.encoder.body.conv1.weight) in trained) is not freeze
    body = {k: v.clone() for k, v in model.encoder.body.state_dict().items()}
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    batch, losses = _panning_batch(), []
    for step in range(4):
        model.queue.keys.copy_(negatives)  # the same negatives each step: the loss is comparable
        terms, projections = model(batch)
        assert list(terms) == ["pixel_info_nce"] and projections.shape == (93, 128)
        losses.append(float(terms["pixel_info_nce"].detach()))
        optimizer.zero_grad()
        total_loss(terms).backward()
        optimizer.step()
        key_before = model.key_encoder.fpn.layer_blocks[0][0].weight.clone()
        model.after_optimizer_step(step, 4)
    online = model.encoder.fpn.layer_blocks[0][0].weight
    key = model.key_encoder.fpn.layer_blocks[0][0].weight
    assert torch.allclose(key, 0.9 * key_before + 0.1 * online)
    assert losses[-1] < losses[0] - 0.05, losses
    body_now = model.encoder.body.state_dict()
    unchanged = all(torch.equal(body[k], v) for k, v in body_now.items())
    assert unchanged is freeze  # frozen: weights and BN statistics as loaded
    assert (model.key_encoder.body is model.encoder.body) is freeze


def test_the_queue_fills_with_this_batchs_normalised_pixel_keys_and_wraps():
    model = _pico(queue_size=150)
    with torch.no_grad():
        model(_panning_batch())
        assert int(model.queue.pointer) == 93  # one key per valid pair, padding left out
        assert torch.allclose(model.queue.keys[:93].norm(dim=1), torch.ones(93))
        first = model.queue.keys[:93].clone()
        model(_panning_batch())
    assert int(model.queue.pointer) == (93 * 2) % 150
    assert torch.equal(model.queue.keys[93:150], first[:57])  # same batch, same keys
    assert torch.equal(model.queue.keys[:36], first[57:])


def test_fixed_count_gives_every_rank_the_same_number_of_keys_to_enqueue():
    keys = F.normalize(torch.randn(5, 4), dim=1)
    drawn = fixed_count(keys, 12, torch.Generator().manual_seed(0))
    assert drawn.shape == (12, 4) and all(any(torch.equal(d, k) for k in keys) for d in drawn)
    none = fixed_count(keys[:0], 3, torch.Generator().manual_seed(0))
    assert none.shape == (3, 4) and torch.allclose(none.norm(dim=1), torch.ones(3))


# -- the ResNet from a local checkpoint --------------------------------------------------------


def test_the_encoder_starts_from_a_local_moco_checkpoint(tmp_path):
    source, _ = build_backbone("resnet18")
    state = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(8, 512)  # MoCo-v2's MLP head: ignored
    state["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)  # the key encoder: ignored
    path = tmp_path / "moco_v2.pth.tar"
    torch.save({"state_dict": state, "epoch": 200, "arch": "resnet18"}, path)
    model = _pico(encoder_checkpoint=str(path))
    assert torch.equal(model.encoder.body.conv1.weight, source.conv1.weight)
    assert torch.equal(
        model.key_encoder.body.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var
    )

    with pytest.raises(FileNotFoundError, match=r"encoder_checkpoint: .*absent\.pt does not exist"):
        _pico(encoder_checkpoint=str(tmp_path / "absent.pt"))
    other, _ = build_backbone("resnet50")
    torch.save(other.state_dict(), tmp_path / "r50.pt")
    resnet18, _ = build_backbone("resnet18")
    with pytest.raises(ValueError, match=r"r50\.pt is not a checkpoint of this backbone"):
        load_body_weights(DenseEncoder(resnet18), tmp_path / "r50.pt")


# -- config ------------------------------------------------------------------------------------

EXPERIMENT = {"name": "pico", "dataset": {"name": "d", "source": {"kind": "folder", "root": "/v"}}}


def test_the_pico_config_section_validates_and_names_unknown_keys():
    cfg = PicoMethodConfig()
    assert (cfg.projection_dim, cfg.embedding_dim, cfg.temperature) == (128, 128, 0.2)
    assert cfg.freeze_encoder and cfg.encoder_checkpoint == ""
    with pytest.raises(ConfigError) as caught:
        parse_experiment(
            {**EXPERIMENT, "train": {"method": {"kind": "pico", "queue_sizee": 4096}}}, "p.yaml"
        )
    assert "p.yaml: train.method.pico.queue_sizee: unknown key" in str(caught.value)
    with pytest.raises(ConfigError, match=r"train\.method\.pico\.temperature"):
        parse_experiment({**EXPERIMENT, "train": {"method": {"kind": "pico", "temperature": 0}}})
    with pytest.raises(ConfigError, match=r"train\.method pico reads the views \['anchor'"):
        parse_experiment({**EXPERIMENT, "train": {"method": "pico", "sampler": "pairs"}})
