import pytest
import pytorch_lightning as pl
import torch

from container_component_src.model.data import batch_loader
from container_component_src.model.system import NonFiniteLossError, VAESystem


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_fast_dev_run_logs_per_row_objectives() -> None:
    rows = torch.randn(300, 5)
    system = VAESystem(n_features=5, hidden_sizes=(16, 8), latent_dim=2, beta=0.5)
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(system, batch_loader(rows, 64, shuffle=True), batch_loader(rows, 64, shuffle=False))
    metrics = trainer.callback_metrics
    assert {"train_loss", "val_loss", "val_nll", "val_kl"} <= set(metrics)
    assert all(torch.isfinite(v) for v in metrics.values())


def test_objective_is_per_row_and_independent_of_batch_size() -> None:
    torch.manual_seed(0)
    rows = torch.randn(512, 4)
    system = VAESystem(n_features=4, hidden_sizes=(8,), latent_dim=2).eval()
    results = []
    for batch_size in (32, 512):
        trainer = _trainer()
        results.append(trainer.validate(system, batch_loader(rows, batch_size, shuffle=False), verbose=False)[0])
    assert results[0]["val_nll"] == pytest.approx(results[1]["val_nll"], rel=1e-5)
    assert 2 < results[0]["val_nll"] < 20, "a per-row value for 4 channels, not a batch sum"


def test_non_finite_loss_stops_with_a_clear_message() -> None:
    rows = torch.randn(64, 3)
    rows[5, 1] = float("nan")
    system = VAESystem(n_features=3, hidden_sizes=(8,), latent_dim=2)
    message = r"train loss is NaN or infinite at epoch 0, in steps 1 to 1 \(learning rate .*lower the learning rate"
    with pytest.raises(NonFiniteLossError, match=message):
        _trainer(max_epochs=1).fit(system, batch_loader(rows, 64, shuffle=False))


def test_non_finite_losses_are_checked_every_few_steps_not_every_step() -> None:
    rows = torch.randn(64 * 120, 3)
    rows[64 * 7 + 5, 1] = float("nan")  # batch 8 of 120, in order
    system = VAESystem(n_features=3, hidden_sizes=(8,), latent_dim=2)
    with pytest.raises(NonFiniteLossError, match="in steps 1 to 50 "):
        _trainer(max_epochs=1).fit(system, batch_loader(rows, 64, shuffle=False))
