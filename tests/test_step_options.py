"""The training step's switches on the CPU (vidssl.train.step_options): torch.compile and its
fallback when compiling fails (at wrap time, in the forward, in the lazily compiled backward),
compiled vs eager numbers, fused SGD and its fallback, CUDA graphs as a no-op off CUDA, the
switches through an experiment file, and a tiny trainer run with every switch on.

Compiling uses the aot_eager backend here (dynamo's tracing and AOTAutograd's joint forward and
backward graphs, run without code generation): inductor builds C++ and took ~30 s for a tiny
model on this machine's shared cores, too slow for a unit test."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import yaml
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.backends.debugging import boxed_nop

from tests.conftest import TINY_EXPERIMENT, build_experiment
from tests.test_training import _clips
from vidssl.config import ConfigError, TrainConfig, experiment_from_json, load_experiment
from vidssl.stages import train
from vidssl.train import step_options
from vidssl.train.step_options import StepModel, build_sgd, compile_mode, load_optimizer_state

CPU = torch.device("cpu")
BACKEND_CALLS: list[int] = []


def _counting_aot_eager(gm: torch.fx.GraphModule, example_inputs):
    BACKEND_CALLS.append(len(gm.graph.nodes))
    return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)


def _broken_backend(gm: torch.fx.GraphModule, example_inputs):
    raise RuntimeError("the test's compiler broke in the forward")


def _broken_backward(gm: torch.fx.GraphModule, example_inputs):
    raise RuntimeError("the test's compiler broke in the backward")


for _name, _backend in {
    "vidssl_test_counting": _counting_aot_eager,
    "vidssl_test_broken": _broken_backend,
    "vidssl_test_broken_backward": aot_autograd(
        fw_compiler=boxed_nop, bw_compiler=_broken_backward
    ),
}.items():
    if _name not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(_backend, name=_name)


@pytest.fixture(autouse=True)
def _one_thread_fresh_dynamo():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch.set_num_threads(threads)


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )


def _step(images: torch.Tensor, target: torch.Tensor):
    """The trainer's step shape: forward, loss, zero the gradients, backward."""

    def forward_backward(model: torch.nn.Module) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(model(images), target)
        model.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    return forward_backward


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 16, 16, generator=generator), torch.randn(4, 4, generator=generator)


def _compile_cfg(backend: str, **switches) -> TrainConfig:
    return TrainConfig(compile=True, compile_backend=backend, **switches)


def test_compiled_step_runs_through_the_backend_and_matches_eager():
    images, target = _data()
    eager_net, compiled_net = _tiny_net(), _tiny_net()
    eager_loss = _step(images, target)(eager_net)
    BACKEND_CALLS.clear()
    step_model = StepModel(compiled_net, _compile_cfg("vidssl_test_counting"), CPU)
    assert step_model.compiled
    compiled_loss = step_model.run(_step(images, target))
    assert BACKEND_CALLS and BACKEND_CALLS[0] > 6  # one graph holding the whole net
    assert step_model.compiled  # it stayed compiled
    assert compiled_loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    for (name, eager_param), compiled_param in zip(
        eager_net.named_parameters(), compiled_net.parameters(), strict=True
    ):
        torch.testing.assert_close(compiled_param.grad, eager_param.grad, msg=name)
    torch.testing.assert_close(compiled_net[1].running_mean, eager_net[1].running_mean)


def test_compile_failing_at_wrap_time_warns_once_and_trains_eagerly(monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler on this machine")

    monkeypatch.setattr(torch, "compile", no_compiler)
    images, target = _data()
    with caplog.at_level(logging.WARNING, logger=step_options.__name__):
        step_model = StepModel(_tiny_net(), _compile_cfg("inductor"), CPU)
        loss = step_model.run(_step(images, target))
    assert not step_model.compiled and step_model.module is step_model.eager
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "train.compile" in warnings[0] and "no compiler on this machine" in warnings[0]
    assert math.isfinite(loss.item())


@pytest.mark.parametrize(
    ("backend", "broken_in"),
    [("vidssl_test_broken", "in the forward"), ("vidssl_test_broken_backward", "in the backward")],
)
def test_compile_failing_at_the_first_step_falls_back_to_eager(backend, broken_in, caplog):
    images, target = _data()
    reference = _tiny_net()
    expected = _step(images, target)(reference)
    net = _tiny_net()
    with caplog.at_level(logging.WARNING, logger=step_options.__name__):
        step_model = StepModel(net, _compile_cfg(backend), CPU)
        assert step_model.compiled
        loss = step_model.run(_step(images, target))
        again = step_model.run(_step(images, target))  # eager from now on: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "train.compile" in warnings[0] and "at the first step" in warnings[0]
    assert f"the test's compiler broke {broken_in}" in warnings[0]
    assert not step_model.compiled
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert math.isfinite(again.item())
    for name, param in net.named_parameters():  # the eager rerun's gradients, not a mixture
        torch.testing.assert_close(param.grad, dict(reference.named_parameters())[name].grad)


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_an_error_of_the_model_itself_after_the_first_step_is_not_swallowed():
    images, target = _data()
    step_model = StepModel(_tiny_net(), _compile_cfg("aot_eager"), CPU)
    step_model.run(_step(images, target))
    with pytest.raises(RuntimeError, match=r"size of tensor a \(4\) must match"):
        step_model.run(_step(images, torch.randn(4, 5)))


def test_cuda_graphs_do_nothing_off_cuda_and_say_so(caplog):
    with caplog.at_level(logging.INFO, logger=step_options.__name__):
        assert compile_mode(_compile_cfg("inductor", cuda_graphs=True), CPU) is None
        cuda = torch.device("cuda")
        assert compile_mode(_compile_cfg("inductor", cuda_graphs=True), cuda) == "reduce-overhead"
        assert compile_mode(TrainConfig(cuda_graphs=True), cuda) is None  # compile off
        assert compile_mode(_compile_cfg("aot_eager", cuda_graphs=True), cuda) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("train.cuda_graphs" in m and "cpu" in m for m in messages)
    assert any("train.compile is off" in m for m in messages)
    assert any("compile_backend inductor" in m for m in messages)


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(2)
    return [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]


def _sgd(params, fused: bool) -> torch.optim.SGD:
    groups = [{"params": params, "name": "all", "fix_lr": False}]
    return build_sgd(groups, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fused)


def test_fused_sgd_on_the_cpu_matches_the_for_loop_sgd():
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)  # CPU fused SGD
    fused_params, plain_params = _params(), _params()
    fused, plain = _sgd(fused_params, fused=True), _sgd(plain_params, fused=False)
    assert fused.param_groups[0]["fused"] is True
    assert plain.param_groups[0]["fused"] in (None, False)
    assert plain.param_groups[0]["foreach"] in (None, False)  # torch's CPU default: for-loop
    assert fused.param_groups[0]["name"] == "all" and "fix_lr" in fused.param_groups[0]
    for _ in range(3):
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            optimizer.zero_grad()
            (params[0].sum(dim=0) * params[1]).square().sum().backward()
            optimizer.step()
    for a, b in zip(fused_params, plain_params, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_sgd_where_torch_has_none_falls_back_with_a_message(caplog):
    params = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # no fused kernels on meta
    with caplog.at_level(logging.INFO, logger=step_options.__name__):
        optimizer = _sgd(params, fused=True)
    assert not optimizer.param_groups[0]["fused"]
    assert optimizer.param_groups[0]["foreach"] is False  # nor foreach ones: the for-loop
    message = next(r.getMessage() for r in caplog.records if "train.fused_optimizer" in r.msg)
    assert "no fused SGD" in message and "for-loop" in message and "meta" in message


def test_resuming_keeps_this_runs_optimizer_implementation():
    saved = _sgd(_params(), fused=False)
    saved.zero_grad()
    sum(p.sum() for p in saved.param_groups[0]["params"]).backward()
    saved.step()
    resumed = _sgd(_params(), fused=True)
    load_optimizer_state(resumed, saved.state_dict())
    assert resumed.param_groups[0]["fused"] is True
    assert resumed.state_dict()["state"][0]["momentum_buffer"] is not None


def test_the_switches_come_from_the_experiment_file_and_a_typo_is_named(experiment_dir):
    switches = {
        "amp": False,
        "channels_last": False,
        "compile": True,
        "compile_backend": "aot_eager",
        "cuda_graphs": True,
        "fused_optimizer": True,
        "pin_memory": False,
    }
    raw = {**TINY_EXPERIMENT, "train": {**TINY_EXPERIMENT["train"], **switches}}
    (experiment_dir / "fast.yaml").write_text(yaml.safe_dump(raw))
    experiment = load_experiment("fast")
    assert {key: getattr(experiment.train, key) for key in switches} == switches
    assert experiment_from_json(experiment.model_dump_json()) == experiment
    defaults = TrainConfig()
    assert (defaults.amp, defaults.channels_last, defaults.pin_memory) == (True, True, True)
    assert not (defaults.compile or defaults.cuda_graphs or defaults.fused_optimizer)
    path = experiment_dir / "typo.yaml"
    path.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "compile_mode": "max"}}))
    with pytest.raises(ConfigError) as caught:
        load_experiment("typo")
    assert f"{path}: train.compile_mode: unknown key" in str(caught.value)


def test_a_tiny_run_with_every_switch_on_trains_on_the_cpu(tmp_path, caplog):
    experiment = build_experiment(
        f"file://{tmp_path}",
        {
            "train": {
                "compile": True,
                "compile_backend": "vidssl_test_counting",
                "cuda_graphs": True,
                "fused_optimizer": True,
                "pin_memory": True,
                "amp": True,
                "channels_last": True,
            }
        },
    )
    clips_url = _clips(experiment)
    BACKEND_CALLS.clear()
    with caplog.at_level(logging.INFO, logger=step_options.__name__):
        output = train.run(experiment, clips_url)
    history = output.manifest.details["history"]
    assert output.manifest.details["steps"] == 6
    assert all(math.isfinite(h["loss"]) for h in history)
    assert BACKEND_CALLS  # the step really went through torch.compile
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "train.fused_optimizer: fused SGD" in messages
    assert "train.cuda_graphs: no CUDA graphs on cpu" in messages
    for name in ("amp", "channels_last", "pin_memory"):
        assert f"train.{name} applies on CUDA only" in messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_run_whose_compiler_fails_keeps_training(tmp_path, caplog):
    experiment = build_experiment(
        f"file://{tmp_path}",
        {"train": {"compile": True, "compile_backend": "vidssl_test_broken", "epochs": 2}},
    )
    with caplog.at_level(logging.WARNING, logger=step_options.__name__):
        output = train.run(experiment, _clips(experiment))
    assert output.manifest.details["steps"] == 6
    assert all(math.isfinite(h["loss"]) for h in output.manifest.details["history"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "train.compile" in warnings[0]


def test_speed_switches_leave_the_train_digest_alone_and_the_gpu_input_does_not():
    """Cached models stay cached when only the speed of the step changes; the GPU input path
    draws its crops differently, so it is another model."""
    from vidssl.stages.train import _digest_fields

    plain = TrainConfig()
    fast = plain.model_copy(
        update={"compile": True, "compile_backend": "aot_eager", "cuda_graphs": True,
                "fused_optimizer": True, "pin_memory": False}
    )  # fmt: skip
    assert _digest_fields(fast) == _digest_fields(plain)
    assert "input" not in _digest_fields(plain)["train"]
    assert _digest_fields(plain.model_copy(update={"input": "gpu"})) != _digest_fields(plain)
