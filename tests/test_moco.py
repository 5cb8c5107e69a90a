"""MoCo-v2's pieces on tensors (queue, momentum update, InfoNCE, shuffling BN, the all-gather
under two real processes) and a temporal MoCo run through the trainer, export and bench."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.config import MoCoMethod, TrainConfig
from vidssl.train.losses import info_nce
from vidssl.train.memory import (
    NegativeQueue,
    frozen_copy,
    momentum_update,
    shuffled_forward,
    split_forward,
)
from vidssl.train.methods import build_method


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])  # the positive: similarity 1
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # similarities 0 and -1
    tau = 0.2
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1 + math.exp(-1 / tau)))
    assert float(info_nce(q, k, negatives, tau)) == pytest.approx(expected, abs=1e-6)


def test_queue_replaces_the_oldest_keys_and_wraps_around():
    queue = NegativeQueue(size=5, dim=2)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first = torch.arange(6.0).view(3, 2)
    queue.dequeue_and_enqueue(first)
    assert torch.equal(queue.keys[:3], first) and int(queue.pointer) == 3
    second = -torch.arange(1.0, 7.0).view(3, 2)
    queue.dequeue_and_enqueue(second)  # 2 at the end, 1 wraps to the start
    assert torch.equal(queue.keys[3:], second[:2]) and torch.equal(queue.keys[0], second[2])
    assert int(queue.pointer) == 1
    assert "keys" in queue.state_dict() and "pointer" in queue.state_dict()  # checkpointed


def test_momentum_update_moves_the_key_encoder_a_little_towards_the_query_encoder():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    before = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    momentum_update(online, target, 0.999)
    assert torch.allclose(target.weight, 0.999 * before + 0.001 * online.weight)


def test_split_forward_gives_each_group_its_own_batch_norm_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(1, affine=False)
    x = torch.cat([torch.zeros(4, 1), torch.full((4, 1), 10.0)]) + torch.randn(8, 1) * 0.1
    whole, split = bn(x), split_forward(bn, x, splits=2)
    assert whole[:4].mean() < -0.9  # normalised with the whole batch's mean (5)
    assert abs(float(split[:4].mean())) < 1e-5  # normalised with its own group's
    assert torch.allclose(split[:4], bn(x[:4]))


def test_shuffled_forward_returns_outputs_in_input_order():
    x = torch.arange(16.0).view(8, 2)
    out = shuffled_forward(lambda group: group * 2, x, splits=4, generator=torch.Generator())
    assert torch.equal(out, x * 2)


def _tiny_moco(**fields) -> nn.Module:
    cfg = TrainConfig(
        backbone="resnet_small",
        method=MoCoMethod(projection_dim=16, hidden_dim=32, queue_size=64, bn_splits=2, **fields),
    )
    torch.manual_seed(0)
    return build_method(cfg)


def test_moco_step_trains_the_query_side_and_the_hook_moves_the_key_side():
    model = _tiny_moco()
    assert torch.equal(model.encoder.conv1.weight, model.key_encoder.conv1.weight)
    groups = model.learnable_params()
    trained = {id(p) for group in groups for p in group["params"]}
    assert trained.isdisjoint(id(p) for p in model.key_encoder.parameters())
    batch = {"first": torch.randn(8, 3, 32, 32), "second": torch.randn(8, 3, 32, 32)}
    losses, projections = model(batch)
    assert list(losses) == ["info_nce"] and projections.shape == (8, 16)
    assert int(model.queue.pointer) == 8  # this batch's keys are the next negatives
    optimizer = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.5)
    losses["info_nce"].backward()
    assert model.key_encoder.conv1.weight.grad is None
    optimizer.step()
    key_before = model.key_encoder.conv1.weight.clone()
    model.after_optimizer_step(1, 10)
    expected = 0.999 * key_before + 0.001 * model.encoder.conv1.weight
    assert torch.allclose(model.key_encoder.conv1.weight, expected)
    assert not torch.equal(model.key_encoder.conv1.weight, key_before)


def test_sync_bn_is_the_option_to_shuffling_bn():
    assert not _tiny_moco().sync_batch_norm
    assert _tiny_moco(shuffle_bn=False).sync_batch_norm


def _all_gather_worker(rank: int, world: int, port: int, out: str) -> None:  # pragma: no cover
    import torch.distributed as dist

    from vidssl.train.memory import batch_shuffle_ddp, batch_unshuffle_ddp, concat_all_gather

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(rank)
    x = torch.arange(4.0).view(4, 1) + 10 * rank
    gathered = concat_all_gather(x)
    shuffled, restore = batch_shuffle_ddp(x)
    back = batch_unshuffle_ddp(shuffled * 2, restore)
    torch.save({"gathered": gathered, "shuffled": shuffled, "back": back}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_concat_all_gather_and_batch_shuffle_across_two_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_all_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    everything = torch.cat([torch.arange(4.0), torch.arange(4.0) + 10]).view(8, 1)
    for rank, result in enumerate(results):
        assert torch.equal(result["gathered"], everything)
        assert torch.equal(result["back"], (torch.arange(4.0).view(4, 1) + 10 * rank) * 2)
    # the shuffle is one permutation of the global batch, split between the ranks
    shuffled = torch.cat([r["shuffled"] for r in results])
    assert sorted(shuffled.flatten().tolist()) == sorted(everything.flatten().tolist())
    assert not torch.equal(shuffled, everything)


def test_normalised_keys_enter_the_queue():
    model = _tiny_moco()
    model({"first": torch.randn(4, 3, 32, 32), "second": torch.randn(4, 3, 32, 32)})
    assert torch.allclose(model.queue.keys[:4].norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(F.normalize(model.queue.keys[:4], dim=1), model.queue.keys[:4])
