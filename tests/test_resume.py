"""Resume is exact (issue 17): train N epochs straight, or stop after N/2 and resume from the
checkpoint into a *fresh* model: the weights, the optimizer moments, the learning rate, the loss
history and the batches seen afterwards are identical, bitwise, on the CPU. Also with
``grad_accum > 1`` (the `small` profile), and a checkpoint of another configuration is refused."""

import numpy as np
import pytest
import torch

from gemkr.train import fit


class Stop(Exception):
    pass


def _model(seed, dropout=0.0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout),
                            torch.nn.Linear(16, 3))
    with torch.no_grad():  # a frozen parameter, as the pretrained parts of GeMKR: the same
        m[0].bias.copy_(torch.linspace(-1, 1, 16))  # in every run, never in a checkpoint
    m[0].bias.requires_grad_(False)
    return m


def _data(epoch, steps, seen, stop_at=None):
    if stop_at is not None and epoch == stop_at:
        raise Stop  # the run is killed at the start of this epoch
    rng = np.random.default_rng(1000 + epoch)  # the caller seeds each epoch, as trained.py does
    for s in range(steps):
        x = torch.as_tensor(rng.normal(size=(8, 6)), dtype=torch.float32)
        y = torch.as_tensor(rng.integers(0, 3, size=8))
        seen.append((epoch, s))
        yield x, y


def _loss(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def _fit(model, ckpt, steps, seen, grad_accum, stop_at=None):
    return fit(model, _loss, lambda e: _data(e, steps, seen, stop_at), epochs=4,
               steps_per_epoch=steps, lr=1e-2, min_lr=1e-4, warmup_steps=3, weight_decay=0.01,
               grad_accum=grad_accum, ckpt_dir=ckpt, desc="t")


def _optimizer(ckpt):
    return torch.load(ckpt / "optimizer.pt", weights_only=True)


@pytest.mark.parametrize("grad_accum, steps, stop, dropout", [
    (1, 5, 2, 0.0), (2, 6, 2, 0.0), (2, 5, 2, 0.0), (2, 5, 1, 0.0),
    (1, 5, 2, 0.1), (2, 5, 1, 0.3)])  # dropout (LoRA's, in GeMKR): the RNG state is checkpointed
def test_resume_into_a_fresh_model_is_bitwise_exact(tmp_path, grad_accum, steps, stop, dropout):
    straight, seen_a = _model(0, dropout), []
    run_a = _fit(straight, tmp_path / "a", steps, seen_a, grad_accum)

    seen_b = []
    with pytest.raises(Stop):
        _fit(_model(0, dropout), tmp_path / "b", steps, seen_b, grad_accum, stop_at=stop)
    fresh, seen_c = _model(123, dropout), []  # other initial weights: the checkpoint fixes them
    run_c = _fit(fresh, tmp_path / "b", steps, seen_c, grad_accum)

    assert run_c["resumed_from_epoch"] == stop
    assert seen_c == seen_a[stop * steps:], "the next batches are the same"
    assert run_c["history"] == run_a["history"], "same losses, bitwise"
    for (name, p), q in zip(straight.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q), name
    a, c = _optimizer(tmp_path / "a"), _optimizer(tmp_path / "b")
    assert a["scheduler"] == c["scheduler"], "learning-rate schedule position"
    for k, state in a["optimizer"]["state"].items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[field], c["optimizer"]["state"][k][field]), (k, field)
    assert a["optimizer"]["param_groups"] == c["optimizer"]["param_groups"]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    _fit(_model(0), tmp_path / "a", 2, [], 1)
    other = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.0),
                                torch.nn.Linear(16, 3), torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="another model configuration"):
        fit(other, _loss, lambda e: _data(e, 2, []), epochs=4, steps_per_epoch=2, lr=1e-2,
            min_lr=1e-4, warmup_steps=1, weight_decay=0.0, ckpt_dir=tmp_path / "a")


def test_training_is_deterministic_for_a_fixed_seed(tmp_path):
    """Same seed, same data order: the same weights and losses, bitwise (CPU)."""
    runs = []
    for k in range(2):
        m = _model(7)
        r = _fit(m, tmp_path / f"r{k}", 5, [], 2)
        runs.append((r["history"], [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
