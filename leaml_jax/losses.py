"""Losses: small pure functions returning (loss, metrics). Masks come from the batch.

Sequence convention (big_vision PaliGemma): logits[:, t] predicts text[:, t+1]; a target token
counts when mask_loss[:, t+1] == 1 (answer / question+answer / caption tokens, never the prompt).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp



def token_ce(logits_BLV, text_BL, mask_loss_BL):
  """Mean next-token cross-entropy over loss tokens. -> (loss, {"tokens", "token_acc"})."""
  logits = logits_BLV[:, :-1].astype(jnp.float32)
  targets = text_BL[:, 1:]
  weights = mask_loss_BL[:, 1:].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  n = jnp.maximum(weights.sum(), 1.0)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return (nll * weights).sum() / n, {"tokens": weights.sum(), "token_acc": (correct * weights).sum() / n}


def model_logits(model, params, batch, rng=None, train=True):
  rngs = {"dropout": rng} if rng is not None and train else {}
  logits, _ = model.apply({"params": params}, batch["image"], batch["text"], batch["mask_ar"],
                          batch["mask_input"], train=train, rngs=rngs)
  return logits


def lm_loss(model, params_fn=None):
  """Plain supervised loss (VQA fine-tune, baselines, base pre-training)."""
  params_fn = params_fn or (lambda p: p)

  def loss_fn(params, batch, rng):
    logits = model_logits(model, params_fn(params), batch, rng)
    loss, m = token_ce(logits, batch["text"], batch["mask_loss"])
    return loss, {"loss_lm": loss, **m}
  return loss_fn


def generator_loss(model, *, distill_weight: float, distill_params_fn=None):
  """LEAML QA-generator loss: QA on labelled triples + λ · caption distillation.

  batch = {"qa": <image -> question+answer>, "distill": <unlabelled image -> teacher caption>}.
  `distill_params_fn(params)`: the params the distillation term sees, e.g.
  `partial(neurons.mask_gradients, mask=relevance_mask)`, so that term's gradient reaches only
  the selected (QA-relevant) neurons; the QA term updates every trainable parameter.
  """
  def loss_fn(params, batch, rng):
    r_qa, r_d = jax.random.split(rng)
    qa, m_qa = token_ce(model_logits(model, params, batch["qa"], r_qa),
                        batch["qa"]["text"], batch["qa"]["mask_loss"])
    if distill_weight == 0.0:
      return qa, {"loss_qa": qa, "token_acc_qa": m_qa["token_acc"]}
    p_d = params if distill_params_fn is None else distill_params_fn(params)
    dist, m_d = token_ce(model_logits(model, p_d, batch["distill"], r_d),
                         batch["distill"]["text"], batch["distill"]["mask_loss"])
    return qa + distill_weight * dist, {"loss_qa": qa, "loss_distill": dist,
                                        "token_acc_qa": m_qa["token_acc"],
                                        "token_acc_distill": m_d["token_acc"]}
  return loss_fn
