"""Distribution heads: Keras 3 layers that turn parameter tensors into TFP distributions.

- `posteriors`: q(z|x) heads, registered in `POSTERIORS`; `flows`: the flow
  posteriors (IAF, planar), registered there too;
- `likelihoods`: p(x|z) heads, registered in `LIKELIHOODS`; each declares its data
  support (`support_problem`) and its parameter names (`parameter_names`);
- `priors`: p(z) and p(z|y) layers, registered in `PRIORS` (also `vae_zoo.priors`);
  `map_priors`: the autoregressive priors over a latent map, and `vamp_prior`: the
  VampPrior, registered there too.

Bodies (`vae_zoo.networks`) end with a projection to a head's `params_shape`; heads
never hold the projection, so one head serves dense, convolutional and
fully-convolutional bodies. See `vae_zoo.heads.base` for shapes and the head contract.
"""

from vae_zoo.distributions import (
    EIGHT_BIT_ATOL,
    LogitBernoulli,
    bernoulli_log_prob_of_draws,
    eight_bit_values,
    fused_bernoulli_log_prob_of_draws,
)
from vae_zoo.heads.base import (
    LIKELIHOODS,
    POSTERIORS,
    DistributionHead,
    LikelihoodHead,
    fused_likelihoods,
)
from vae_zoo.heads.flows import FlowPosterior, IAFPosterior, PlanarPosterior
from vae_zoo.heads.likelihoods import (
    BernoulliLikelihood,
    Categorical256Likelihood,
    DiscretizedLogisticMixtureLikelihood,
    EightBitLikelihood,
    GaussianLearnedScaleLikelihood,
    GaussianLikelihood,
    GaussianPerPixelLikelihood,
)
from vae_zoo.heads.posteriors import (
    CategoricalPosterior,
    DiagonalGaussianPosterior,
    FullCovarianceGaussianPosterior,
)
from vae_zoo.heads.map_priors import AutoregressiveCategoricalPrior, SpatialAutoregressivePrior
from vae_zoo.heads.priors import (
    PRIORS,
    ConditionalGaussianPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    UniformCategoricalPrior,
)
from vae_zoo.heads.vamp_prior import VampPrior

__all__ = [
    "EIGHT_BIT_ATOL", "LIKELIHOODS", "POSTERIORS", "PRIORS",
    "AutoregressiveCategoricalPrior", "BernoulliLikelihood", "Categorical256Likelihood", "CategoricalPosterior",
    "ConditionalGaussianPrior", "DiagonalGaussianPosterior", "DiscretizedLogisticMixtureLikelihood",
    "DistributionHead", "EightBitLikelihood", "FlowPosterior", "FullCovarianceGaussianPosterior",
    "GaussianLearnedScaleLikelihood", "GaussianLikelihood", "GaussianPerPixelLikelihood",
    "LikelihoodHead", "LogitBernoulli", "MixtureOfGaussiansPrior", "PlanarPosterior", "Prior",
    "SpatialAutoregressivePrior", "StandardNormalPrior", "UniformCategoricalPrior", "VampPrior",
    "bernoulli_log_prob_of_draws", "eight_bit_values", "fused_bernoulli_log_prob_of_draws",
    "fused_likelihoods",
]
