import pytest
import torch

from container_component_src.model.vae import VAE, kl_divergence


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
