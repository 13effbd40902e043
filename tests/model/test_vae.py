import pytest
import torch

from container_component_src.model.vae import VAE, WindowVAE, build_vae, kl_divergence


def test_shapes_and_finite_loss_on_random_data() -> None:
    torch.manual_seed(0)
    vae = VAE(n_features=7, hidden_sizes=[16, 8], latent_dim=3)
    x = torch.randn(32, 7) * 5
    x_mean, mean, logvar = vae(x)
    assert x_mean.shape == (32, 7) and mean.shape == logvar.shape == (32, 3)
    nll, kl = vae.nll(x, x_mean), kl_divergence(mean, logvar)
    assert nll.shape == kl.shape == (32,)
    assert torch.isfinite(nll).all() and torch.isfinite(kl).all() and (kl >= 0).all()


def test_score_is_the_nll_of_the_latent_mean_and_scripts() -> None:
    vae = VAE(4, [8], 2).eval()
    x = torch.randn(10, 4)
    scripted = torch.jit.script(vae)
    with torch.no_grad():
        expected = vae.nll(x, vae.decode(vae.encode(x)[0]))
        torch.testing.assert_close(vae.score(x), expected)
        torch.testing.assert_close(scripted.score(x), expected)
        torch.testing.assert_close(scripted.channel_scores(x).sum(dim=1), expected)
        assert scripted.channel_scores(x).shape == (10, 4)


def test_nll_matches_torch_distributions() -> None:
    vae = VAE(3, [8], 2)
    with torch.no_grad():
        vae.log_var_x.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x, mu = torch.randn(5, 3), torch.randn(5, 3)
    expected = -torch.distributions.Normal(mu, (0.5 * vae.log_var_x).exp()).log_prob(x).sum(dim=1)
    torch.testing.assert_close(vae.nll(x, mu), expected.detach())


@pytest.mark.parametrize("latent", [1, 6])
def test_latent_sizes(latent: int) -> None:
    assert VAE(5, [16, 8], latent).encode(torch.zeros(2, 5))[0].shape == (2, latent)


def test_the_windowed_model_scores_each_row_given_the_rows_before_it() -> None:
    torch.manual_seed(0)
    vae = WindowVAE(n_features=3, hidden_sizes=[8, 4], latent_dim=2, window=5).eval()
    series = torch.randn(12, 3)
    scripted = torch.jit.script(vae)
    with torch.no_grad():
        scores = scripted.score(series)
        assert scores.shape == (8,), "rows - (window - 1) scores"
        torch.testing.assert_close(scripted.score(series[3:8]), scores[3:4], msg="row 7 is scored from rows 3..7")
        torch.testing.assert_close(scripted.channel_scores(series).sum(dim=1), scores)
        windows = vae.windows(series)
        assert windows.shape == (8, 3, 5)
        torch.testing.assert_close(windows[-1], series[7:].T)
        x_mean, mean, logvar = vae(windows)
        assert x_mean.shape == windows.shape and mean.shape == logvar.shape == (8, 2)
        assert vae.nll(windows, x_mean).shape == (8,)


def test_calibration_standardises_and_weights_each_channel() -> None:
    vae = VAE(3, [8], 2).eval()
    x = torch.randn(20, 3)
    with torch.no_grad():
        raw = vae.raw_channel_nll(x)
        vae.calibrate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 4.0]), torch.tensor([1.0, 0.5, 0.0]))
        expected = (raw - torch.tensor([1.0, 2.0, 3.0])) / torch.tensor([2.0, 1.0, 4.0]) * torch.tensor([1.0, 0.5, 0.0])
        torch.testing.assert_close(vae.channel_scores(x), expected)
        torch.testing.assert_close(torch.jit.script(vae).score(x), expected.sum(dim=1))


def test_mode_channels_get_a_wider_variance_floor() -> None:
    vae = VAE(2, [8], 2)
    vae.set_mode_channels([1])
    with torch.no_grad():
        vae.log_var_x.fill_(-30.0)
    one_step = (
        vae.channel_nll(torch.ones(1, 2), torch.zeros(1, 2)) - vae.channel_nll(torch.zeros(1, 2), torch.zeros(1, 2))
    )[0]
    assert one_step[1] <= 0.5 / 0.5**2 + 1e-5, "a mode channel's switch costs at most that of a 0.5 standard deviation"
    assert one_step[0] > 1e4, "a measured channel may learn a sharp likelihood"
    scripted = torch.jit.script(vae.eval())
    torch.testing.assert_close(scripted.raw_channel_nll(torch.ones(1, 2)), vae.raw_channel_nll(torch.ones(1, 2)))


def test_build_vae_picks_the_model() -> None:
    assert isinstance(build_vae("point", 4, [8], 2, window=16), VAE)
    windowed = build_vae("window", 4, [8], 2, window=16)
    assert isinstance(windowed, WindowVAE) and windowed.context == 15


@pytest.mark.parametrize("window", [0, 4], ids=["point", "window"])
def test_a_bounded_channel_beyond_its_bounds_scores_as_at_them(window: int) -> None:
    torch.manual_seed(0)
    vae = build_vae("window" if window else "point", 3, [8], 2, window).eval()
    assert not vae.bounded_inputs, "unbounded until training bounds it"
    x = torch.randn(12, 3).clamp(-1, 1)
    with torch.no_grad():
        before = torch.jit.script(vae).score(x)
        inf = float("inf")
        vae.bound_inputs(torch.tensor([-inf, -1.0, -inf]), torch.tensor([inf, 1.0, inf]))
        scripted = torch.jit.script(vae)
        torch.testing.assert_close(scripted.score(x), before, msg="rows within the bounds score as before")
        far, edge = x.clone(), x.clone()
        far[:, 1], edge[:, 1] = 50.0, 1.0
        # The encoder sees the bounded channel at its bound however far it is: the other channels'
        # likelihoods do not move; its own NLL does (weighted 0 when it is left out of the score).
        far_nll, edge_nll = scripted.raw_channel_nll(far), scripted.raw_channel_nll(edge)
        torch.testing.assert_close(far_nll[:, [0, 2]], edge_nll[:, [0, 2]])
        assert (far_nll[:, 1] > edge_nll[:, 1]).all()
