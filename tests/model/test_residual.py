"""The classical detectors as models: PCA from streamed sums, the raw signal, and their served form."""

import json

import numpy as np
import pytest
import torch

from container_component_src.model.residual import ResidualDetector


def _rows(seed: int = 0, count: int = 2_000) -> np.ndarray:
    """Five channels on a two-dimensional plane (plus a little noise), off centre."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(count, 2))
    mixing = rng.normal(size=(2, 5))
    return latent @ mixing + 0.01 * rng.normal(size=(count, 5)) + np.arange(5.0)


def _principal(rows: np.ndarray, weights: np.ndarray | None = None, **kwargs) -> ResidualDetector:
    weights = np.ones(rows.shape[1]) if weights is None else weights
    return ResidualDetector.principal(len(rows), rows.sum(axis=0), rows.T @ rows, weights, **kwargs)


def test_pca_from_streamed_sums_spans_the_plane_an_svd_finds() -> None:
    rows = _rows()
    pca = _principal(rows)
    assert pca.components.shape == (5, 2), "two directions explain 90 % of a plane's variance"
    np.testing.assert_allclose(pca.mean.numpy(), rows.mean(axis=0), atol=1e-12)
    # The same subspace as the SVD of the centred rows: equal projection matrices.
    _, _, vt = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
    expected = vt[:2].T @ vt[:2]
    found = pca.components.numpy() @ pca.components.numpy().T
    np.testing.assert_allclose(found, expected, atol=1e-8)
    # Sums over parts are the sums over the whole: streaming changes nothing.
    parts = np.array_split(rows, 7)
    streamed = ResidualDetector.principal(
        len(rows), sum(p.sum(axis=0) for p in parts), sum(p.T @ p for p in parts), np.ones(5)
    )
    np.testing.assert_allclose(streamed.scores(rows), pca.scores(rows), rtol=1e-6, atol=1e-12)


def test_pca_scores_rows_off_the_plane_and_keeps_at_least_one_error_direction() -> None:
    rows = _rows()
    pca = _principal(rows)
    on_plane = pca.scores(rows[:100])
    off_plane = pca.scores(rows[:100] + np.array([0.0, 0.0, 0.0, 0.0, 1.0]))
    assert on_plane.max() < 0.01 < off_plane.min()
    # Every direction "explains" 100 %: still one left out, so that a row always has an error.
    assert _principal(rows, explained=1.0).components.shape == (5, 4)
    assert _principal(rows, explained=0.1).components.shape == (5, 1)


def test_constant_rows_give_zero_scores_not_nan() -> None:
    rows = np.ones((50, 3))
    pca = _principal(rows)
    assert pca.components.shape[1] <= 2
    assert np.isfinite(pca.scores(rows)).all() and (pca.scores(rows) == 0).all()


def test_channel_scores_sum_to_the_score_and_weights_apply_to_the_error() -> None:
    rows = _rows(1)
    weights = np.array([1.0, 0.5, 0.0, 2.0, 1.0])
    pca = _principal(rows, weights)
    series = torch.from_numpy(rows[:200] + np.array([0.3, -0.2, 5.0, 0.1, 0.0]))
    shares = pca.channel_scores(series)
    np.testing.assert_allclose(shares.sum(dim=1).numpy(), pca.score(series).numpy())
    assert (shares[:, 2] == 0).all(), "a channel of weight 0 adds nothing of its own"
    raw = ResidualDetector.raw_signal(weights)
    values = rows[:10]
    np.testing.assert_allclose(raw.scores(values), np.square(values) @ weights)


def test_bounds_clamp_a_channel_before_it_is_scored() -> None:
    weights = np.array([1.0, 0.0, 1.0])
    raw = ResidualDetector.raw_signal(weights, (np.array([-np.inf, -1.0, -np.inf]), np.array([np.inf, 1.0, 2.0])))
    scores = raw.scores(np.array([[1.0, 30.0, 1.0], [1.0, 0.0, 5.0]]))
    assert scores.tolist() == [2.0, 5.0], "channel c clamped to 2 before it is squared"


def test_the_served_program_scores_as_evaluation_did() -> None:
    rows = _rows(2)
    low, high = np.full(5, -np.inf), np.full(5, np.inf)
    high[1] = 3.0
    pca = _principal(rows, np.array([1.0, 0.0, 1.0, 1.0, 1.0]), bounds=(low, high))
    # What evaluation hands deploy: JSON (an unbounded input as null), then a TorchScript program.
    params = json.loads(json.dumps(pca.to_dict()))
    assert params["input_high"][1] == 3.0 and params["input_high"][0] is None
    scripted = torch.jit.script(ResidualDetector.from_dict(params))
    series = torch.from_numpy(rows[:300] * 2)
    np.testing.assert_allclose(scripted.score(series).numpy(), pca.scores(rows[:300] * 2))
    np.testing.assert_allclose(scripted.channel_scores(series).numpy(), pca.channel_scores(series).numpy())
    assert scripted.context == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_are_float64_whatever_the_rows(dtype: type) -> None:
    rows = _rows(3).astype(dtype)
    assert _principal(rows.astype(np.float64)).scores(rows).dtype == np.float64


def test_a_channel_of_weight_0_has_no_part_in_the_directions_or_the_error() -> None:
    rows = _rows(4)
    # The plane lies mostly in channels d and e: unweighted, PCA would spend its directions there.
    rows[:, 3:] *= 100.0
    weights = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    pca = _principal(rows, weights, explained=1.0)
    components = pca.components.numpy()
    assert components.shape == (5, 2), "at most one fewer than the three weighted channels"
    assert (components[3:] == 0).all()
    moved = rows[:50].copy()
    moved[:, 3:] += 1e4
    np.testing.assert_array_equal(pca.scores(moved), pca.scores(rows[:50]))
    # What the unweighted fit missed: a row far off on every weighted channel has an error to show.
    far = rows[:1] + np.array([50.0, 50.0, 50.0, 0.0, 0.0])
    assert pca.scores(far)[0] > 100 * pca.scores(rows).max()
    # Only one weighted channel: no direction is left to project on, the error is its square.
    single = _principal(rows, np.array([0.0, 0.0, 2.0, 0.0, 0.0]))
    assert single.components.shape == (5, 0)
    np.testing.assert_allclose(single.scores(rows[:5]), 2.0 * np.square(rows[:5, 2] - rows[:, 2].mean()))


def test_directions_fitted_before_the_weighted_space_are_refused() -> None:
    rows = _rows(5)
    old = _principal(rows, np.array([1.0, 0.5, 1.0, 1.0, 1.0])).to_dict()
    del old["space"]
    with pytest.raises(ValueError, match="evaluate again"):
        ResidualDetector.from_dict(old)
    # Equal weights, or no directions (the raw signal), score as they did.
    equal = _principal(rows).to_dict()
    del equal["space"]
    np.testing.assert_allclose(ResidualDetector.from_dict(equal).scores(rows), _principal(rows).scores(rows))
    raw = ResidualDetector.raw_signal(np.array([1.0, 0.5, 1.0, 1.0, 1.0])).to_dict()
    del raw["space"]
    assert ResidualDetector.from_dict(raw).components.shape == (5, 0)
