import numpy as np
import pandas as pd
import pytest
import torch

from container_component_src.evaluation import scoring
from container_component_src.model.vae import VAE, WindowVAE
from container_component_src.storage import InputError


@pytest.fixture(scope="module")
def scripted() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.script(VAE(3, [8], 2).eval())


def test_scores_match_the_model_in_any_batch_size(scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    with torch.no_grad():
        expected = scripted.score(torch.from_numpy(values)).double().numpy()
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", 128)
    np.testing.assert_allclose(scoring.score_rows(scripted, values, progress=True), expected, rtol=1e-6)
    per_channel = scoring.score_rows(scripted, values, method="channel_scores")
    assert per_channel.shape == (1000, 3)
    np.testing.assert_allclose(per_channel.sum(axis=1), expected, rtol=1e-5)
    assert scoring.score_rows(scripted, values[:0]).shape == (0,)


def test_extended_index_pads_each_segment_with_its_first_row() -> None:
    index, real = scoring.extended_index(np.array([0, 0, 0, 1, 1]), context=2)
    assert index.tolist() == [0, 0, 0, 1, 2, 3, 3, 3, 4]
    assert real.tolist() == [2, 3, 4, 7, 8]
    index, real = scoring.extended_index(np.array([0, 0]), context=0)
    assert index.tolist() == real.tolist() == [0, 1]


def test_a_windowed_model_scores_every_row_and_no_window_crosses_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torch.jit.script(WindowVAE(3, [8], 2, window=4).eval())
    values = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)
    segments = np.repeat([0, 1, 2], [100, 150, 50])
    monkeypatch.setattr(scoring, "SCORE_BATCH_ROWS", 64)
    scores = scoring.score_rows(model, values, segments)
    assert scores.shape == (300,)
    with torch.no_grad():
        inside = model.score(torch.from_numpy(values[100:250])).double().numpy()
        padded = model.score(torch.from_numpy(np.concatenate([values[[100] * 3], values[100:102]]))).double().numpy()
    np.testing.assert_allclose(scores[103:250], inside, rtol=1e-5, err_msg="whole windows inside segment 1")
    np.testing.assert_allclose(scores[100:102], padded[:2], rtol=1e-5, err_msg="its first rows see its first row")
    changed = values.copy()
    changed[99] += 100.0  # the last row of segment 0 must not reach into segment 1
    np.testing.assert_allclose(scoring.score_rows(model, changed, segments)[100:], scores[100:], rtol=1e-6)


def test_channel_matrix_names_the_problem() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": [1.0, 2.0]})
    with pytest.raises(InputError, match="test.parquet lacks channel.*c"):
        scoring.channel_matrix(frame, ["a", "c"], "test.parquet")
    with pytest.raises(InputError, match="NaN or infinite values in a"):
        scoring.channel_matrix(frame, ["a", "b"], "test.parquet")
    assert scoring.channel_matrix(frame, ["b"], "x").flags.c_contiguous


def test_trailing_median_restarts_in_each_segment() -> None:
    scores = np.array([1.0, 100.0, 1.0, 1.0, 50.0, 70.0])
    segments = np.array([0, 0, 0, 0, 1, 1])
    assert scoring.smooth_scores(scores, 3, segments).tolist() == [1.0, 50.5, 1.0, 1.0, 50.0, 60.0]
    assert scoring.smooth_scores(scores, 1, segments).tolist() == scores.tolist()
    with pytest.raises(ValueError, match="smoothing-window"):
        scoring.smooth_scores(scores, 0, segments)
