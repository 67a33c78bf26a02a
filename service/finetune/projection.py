"""Fitted projections: a [d, k] matrix taking a model's vectors to k dimensions for documents and queries alike, its
columns ordered so that every prefix is a good shorter vector.

- Unsupervised: the uncentred principal axes of an index's stored vectors (the top-k eigenvectors of XᵀX), in
  order of the variance they keep: the best rank-k linear reconstruction of the vectors whose dot products search
  compares, and nested by construction.
- Supervised: started from the principal axes of the training texts' vectors, then trained with in-batch InfoNCE on
  the (query, passage) pairs, both sides projected, the loss summed over nested prefixes (k, k/2, k/4, ... down to 8:
  Matryoshka), pulled toward the start (L2) so that little data cannot take it far. Numpy, analytic gradients, Adam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from service.finetune.trainer import StepMetrics, TrainingConfig, TrainingSet, optimise

MIN_PREFIX = 8


def principal_axes(batches: Iterable[np.ndarray], k: int) -> np.ndarray:
    """[d, k]: the top-k eigenvectors of the uncentred second moment of the rows of `batches`, largest first."""
    moment: np.ndarray | None = None
    for rows in batches:
        rows = np.asarray(rows, dtype=np.float64)
        moment = rows.T @ rows if moment is None else moment + rows.T @ rows
    if moment is None:
        raise ValueError("no vectors to fit a projection on")
    values, vectors = np.linalg.eigh(moment)  # ascending
    axes = vectors[:, np.argsort(values)[::-1][:k]]
    axes *= np.where(axes.sum(axis=0) < 0, -1.0, 1.0)  # a fixed sign per axis: the same data, the same matrix
    return axes.astype(np.float32)


def prefixes(k: int) -> list[int]:
    """The nested widths a supervised projection is trained at: k, k/2, k/4, ... (at least MIN_PREFIX)."""
    widths = [k]
    while widths[-1] // 2 >= MIN_PREFIX:
        widths.append(widths[-1] // 2)
    return widths


def _normalised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x / norm, norm


def _through_norm(d_hat: np.ndarray, hat: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """The gradient of x from that of x / |x|."""
    return (d_hat - hat * np.sum(d_hat * hat, axis=1, keepdims=True)) / norm


def projection_infonce(
    weights: np.ndarray, data: TrainingSet, rows: np.ndarray, temperature: float
) -> tuple[float, float, np.ndarray]:
    """Loss (summed over the prefixes), accuracy at full width, and the gradient for the pairs `rows`: each query
    against its passage and the batch's other passages (except copies of its own), all projected."""
    x, y = data.queries[rows], data.positives[rows]
    keys = [data.positive_keys[r] for r in rows]
    b = len(rows)
    same = np.array([[keys[i] == keys[j] and i != j for j in range(b)] for i in range(b)])
    target = np.arange(b)
    grad = np.zeros_like(weights)
    total, accuracy = 0.0, 0.0
    for width in prefixes(weights.shape[1]):
        part = weights[:, :width]
        q_hat, q_norm = _normalised(x @ part)
        p_hat, p_norm = _normalised(y @ part)
        logits = np.where(same, -np.inf, q_hat @ p_hat.T / temperature)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        total += float(-np.log(np.maximum(probs[target, target], 1e-30)).mean())
        if width == weights.shape[1]:
            accuracy = float((probs.argmax(axis=1) == target).mean())
        d_logits = probs.copy()
        d_logits[target, target] -= 1
        d_logits /= b * temperature
        d_q = _through_norm(d_logits @ p_hat, q_hat, q_norm)
        d_p = _through_norm(d_logits.T @ q_hat, p_hat, p_norm)
        grad[:, :width] += x.T @ d_q + y.T @ d_p
    return total, accuracy, grad


def train_projection(
    data: TrainingSet,
    start: np.ndarray,
    config: TrainingConfig,
    on_step: Callable[[StepMetrics, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> np.ndarray:
    """The trained [d, k] projection, from `start` (the pairs' principal axes) and pulled toward it."""
    return optimise(start, projection_infonce, data, config, on_step, on_epoch, cancelled)
