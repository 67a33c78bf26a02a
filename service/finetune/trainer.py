"""The query adapter: a linear map on query embeddings, trained with InfoNCE in numpy (analytic gradients).

Documents keep their base vectors; a query becomes normalize(base(query) @ W). W starts at the identity and is
pulled back toward it (L2), so an adapter trained on little data cannot wander far from the base model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class TrainingSet:
    queries: np.ndarray  # [n, d] base query embeddings
    positives: np.ndarray  # [n, d] base passage embeddings, unit length
    positive_keys: list[str]  # identity of each positive passage (so duplicates are not used as negatives)
    negatives: list[np.ndarray]  # per query: [k_i, d] hard negatives (may be empty)


@dataclass
class TrainingConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 0.05
    regularisation: float = 0.001  # weight of ||W - I||^2
    seed: int = 0


@dataclass
class StepMetrics:
    step: int
    epoch: int
    loss: float
    accuracy: float


def infonce(
    weights: np.ndarray, data: TrainingSet, rows: np.ndarray, temperature: float
) -> tuple[float, float, np.ndarray]:
    """Loss, accuracy and gradient for the queries `rows`: each against its positive, the batch's other positives
    (except copies of its own) and its hard negatives."""
    x = data.queries[rows]
    q = x @ weights
    norm = np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q_hat = q / norm
    in_batch = data.positives[rows]  # [b, d]
    keys = [data.positive_keys[r] for r in rows]
    b = len(rows)
    hard = [data.negatives[r] for r in rows]
    width = max((len(h) for h in hard), default=0)
    # Candidates per query: the b in-batch positives, then up to `width` own hard negatives (padded, masked).
    candidates = np.zeros((b, b + width, x.shape[1]), np.float32)
    candidates[:, :b] = in_batch[None, :, :]
    mask = np.ones((b, b + width), bool)
    same = np.array([[keys[i] == keys[j] and i != j for j in range(b)] for i in range(b)])
    mask[:, :b] &= ~same
    for i, h in enumerate(hard):
        candidates[i, b : b + len(h)] = h
        mask[i, b + len(h) :] = False
    logits = np.einsum("bd,bcd->bc", q_hat, candidates) / temperature
    logits = np.where(mask, logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    target = np.arange(b)
    loss = float(-np.log(np.maximum(probs[target, target], 1e-30)).mean())
    accuracy = float((probs.argmax(axis=1) == target).mean())
    d_logits = probs.copy()
    d_logits[target, target] -= 1
    d_logits /= b * temperature
    d_q_hat = np.einsum("bc,bcd->bd", d_logits, candidates)
    # Through the normalisation: d q = (I - q_hat q_hat^T) d q_hat / |q|
    d_q = (d_q_hat - q_hat * np.sum(d_q_hat * q_hat, axis=1, keepdims=True)) / norm
    return loss, accuracy, x.T @ d_q


Loss = Callable[[np.ndarray, TrainingSet, np.ndarray, float], tuple[float, float, np.ndarray]]


def evaluate(
    weights: np.ndarray, data: TrainingSet, batch_size: int, temperature: float, objective: Loss | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy over `data` by `objective` (default: the query adapter's InfoNCE)."""
    losses, accuracies = [], []
    for start in range(0, len(data.queries), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data.queries)))
        loss, accuracy, _ = (objective or infonce)(weights, data, rows, temperature)
        losses.append(loss)
        accuracies.append(accuracy)
    return float(np.mean(losses)), float(np.mean(accuracies))


def train_adapter(
    data: TrainingSet,
    config: TrainingConfig,
    on_step: Callable[[StepMetrics, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> np.ndarray:
    """The trained [d, d] adapter, from the identity and pulled toward it."""
    identity = np.eye(data.queries.shape[1], dtype=np.float32)
    return optimise(identity, infonce, data, config, on_step, on_epoch, cancelled)


def optimise(
    start: np.ndarray,
    objective: Loss,
    data: TrainingSet,
    config: TrainingConfig,
    on_step: Callable[[StepMetrics, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, np.ndarray], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> np.ndarray:
    """Adam on a matrix from `start`, minimising `objective` over shuffled batches plus an L2 pull back toward
    `start` (so that little data cannot take it far). `on_epoch` gets a copy after each epoch."""
    rng = np.random.default_rng(config.seed)
    weights = start.astype(np.float32).copy()
    m, v = np.zeros_like(weights), np.zeros_like(weights)
    beta1, beta2, step = 0.9, 0.999, 0
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(data.queries))
        for first in range(0, len(order), config.batch_size):
            if cancelled():
                return weights
            rows = order[first : first + config.batch_size]
            if len(rows) < 2:
                continue
            loss, accuracy, grad = objective(weights, data, rows, config.temperature)
            grad = grad + 2 * config.regularisation * (weights - start)
            step += 1
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad**2
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            weights = (weights - config.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
            if on_step:
                on_step(StepMetrics(step, epoch, loss, accuracy), weights)
        if on_epoch:
            on_epoch(epoch, weights.copy())
    return weights
