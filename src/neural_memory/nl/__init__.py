"""Nested Learning (arXiv 2512.24695v1).

* :mod:`neural_memory.nl.associative_memory` — Definition 1 / NSAM: inner objectives over (keys, values),
  one GD step or the exact proximal step on them, and their minimisers (Eq. 6, 19–20, 98–99).
* :mod:`neural_memory.nl.optimizers` — optimizers as instances: momentum, preconditioned momentum, Muon and
  Newton–Schulz, Appendix B's element-wise and matrix momentum (GD with momentum, Adam, AdaGrad), M3
  (Algorithm 1) and Delta Gradient Descent with Appendix C's derivation; §4.4's Delta, deep, feature-map
  and non-linear-output momenta (Eq. 46, 48–52).
* :mod:`neural_memory.nl.gradient_descent` — SGD, its proximal and FTRL forms, GD with the output surprise
  (Eq. 1–3, 8, 23); :mod:`neural_memory.nl.training_objective` — the expected loss and its minimiser
  (Eq. 4, 7, 22).
* :mod:`neural_memory.nl.linear_attention` — the fast-weight programmer and linear attention, its write as
  one GD step on the dot-product objective (Eq. 5, 14–18).
* :mod:`neural_memory.nl.knowledge_transfer` — the two-level forward pass and the meta-learned initial
  state, MAML (Eq. 26, 28).
* :mod:`neural_memory.nl.learning_rules` — the sequence-model rules of §5 as memories: attention as
  Nadaraya–Watson regression, Hebbian, delta, Oja and Omega rules, AdaTransformer (Eq. 21, 61–69).
* :mod:`neural_memory.nl.cms` — the Continuum Memory System: MLP levels updated every C^(l) tokens by their
  summed error signal, Sequential, Nested and Independent (Eq. 70–74).
* :mod:`neural_memory.nl.backprop` — backprop as associative memories and Generalized GD (Eq. 29–32, 54–55,
  58–60).
* :mod:`neural_memory.nl.toy_problems` — orthogonal continual-learning tasks (Eq. 45) and the
  time-varying-curvature toy (Eq. 53).
* :mod:`neural_memory.nl.self_modifying` — self-modifying Titans: memories that generate their own keys,
  values, learning rates and retention gates, updated by DGD with weight decay, chunk-parallel (Eq. 76–93).
* :mod:`neural_memory.nl.hope` — Hope: self-modifying Titans followed by the CMS chain, and Hope-Attention
  (softmax attention + CMS) (Eq. 94–97, N-U16); :mod:`neural_memory.nl.models` — the LM kinds ``hope`` and
  ``hope-attention`` of :func:`neural_memory.models.registry.build_lm`.
"""

from neural_memory.nl.backprop import (
    backprop,
    backprop_gd_step,
    generalized_gd_step,
    layer_gd_step,
    self_referential_step,
    self_referential_value,
)
from neural_memory.nl.cms import (
    CMSState,
    ContinuumMemory,
    cms_chain,
    cms_independent,
    continuum_memory_reference,
)
from neural_memory.nl.gradient_descent import ftrl_iterate, output_surprise_step, sgd_step
from neural_memory.nl.hope import HopeBlock, HopeState
from neural_memory.nl.knowledge_transfer import (
    adapted_memory_loss,
    meta_learned_initialisation,
    two_level_forward,
)
from neural_memory.nl.learning_rules import (
    AdaTransformerBlock,
    OjaObjective,
    ada_transformer_block,
    delta_rule_rnn,
    delta_rule_rnn_chunked,
    hebbian_rnn,
    hebbian_rnn_parallel,
    nadaraya_watson,
    oja_rnn,
    oja_step,
    omega_rule,
    omega_rule_windowed,
    sliding_window_attention,
)
from neural_memory.nl.linear_attention import (
    fast_weight_programmer,
    linear_attention,
    linear_attention_projections,
    linear_attention_read,
    linear_attention_write,
)
from neural_memory.nl.self_modifying import (
    SelfModifyingState,
    SelfModifyingTitans,
    self_modifying_reference,
    self_modifying_step,
)
from neural_memory.nl.toy_problems import (
    CURVATURE_TOY_START,
    continual_task_loss,
    curvature_toy,
    curvature_toy_grad,
    orthogonal_tasks,
)
from neural_memory.nl.training_objective import expected_loss, minimise_expected_loss

__all__ = [
    "CURVATURE_TOY_START",
    "AdaTransformerBlock",
    "CMSState",
    "ContinuumMemory",
    "HopeBlock",
    "HopeState",
    "OjaObjective",
    "SelfModifyingState",
    "SelfModifyingTitans",
    "ada_transformer_block",
    "adapted_memory_loss",
    "backprop",
    "backprop_gd_step",
    "cms_chain",
    "cms_independent",
    "continual_task_loss",
    "continuum_memory_reference",
    "curvature_toy",
    "curvature_toy_grad",
    "delta_rule_rnn",
    "delta_rule_rnn_chunked",
    "expected_loss",
    "fast_weight_programmer",
    "ftrl_iterate",
    "generalized_gd_step",
    "hebbian_rnn",
    "hebbian_rnn_parallel",
    "layer_gd_step",
    "linear_attention",
    "linear_attention_projections",
    "linear_attention_read",
    "linear_attention_write",
    "meta_learned_initialisation",
    "minimise_expected_loss",
    "nadaraya_watson",
    "oja_rnn",
    "oja_step",
    "omega_rule",
    "omega_rule_windowed",
    "orthogonal_tasks",
    "output_surprise_step",
    "self_modifying_reference",
    "self_modifying_step",
    "self_referential_step",
    "self_referential_value",
    "sgd_step",
    "sliding_window_attention",
    "two_level_forward",
]
