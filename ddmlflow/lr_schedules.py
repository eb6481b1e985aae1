"""Gu et al.'s step learning-rate schedules (GC sec. 3.1.1, CIFAR), at any number of epochs.

GC train the sub-networks 120 epochs (lr 1e-3, divided by 10 at 60, 80 and 100), the
composed global net GNet-T 80 epochs (lr 1e-4, /10 at 20 and 40, /2 at 60) and the
randomly initialised GNet-R 200 epochs (lr 1e-3, /10 at 80, 140, 160, /2 at 180). We keep
each drop at the same fraction of its phase, so at GC's lengths the schedules are theirs
exactly and with fewer epochs they shrink with the phase. The starting rate is the run's
(GNet-T: x 0.1, as GC). GC also divide the rate by sqrt(10) after 5 epochs without a
better validation accuracy; that adaptive part is not modelled.
"""

from __future__ import annotations

import keras

# (GC's phase length in epochs, ((epoch, factor), ...)): from that epoch on, the rate is multiplied by factor
GC_SUB = (120, ((60, 0.1), (80, 0.1), (100, 0.1)))
GC_FURTHER = (80, ((20, 0.1), (40, 0.1), (60, 0.5)))
GC_GLOBAL = (200, ((80, 0.1), (140, 0.1), (160, 0.1), (180, 0.5)))


def drop_epochs(epochs: int, phase: tuple) -> list[tuple[int, float]]:
    """GC's drops moved to a phase of ``epochs`` epochs: (first epoch at the new rate, factor), merged per epoch.

    Drops that would fall on epoch 0 or after the last epoch are dropped themselves.
    """
    length, drops = phase
    out: list[tuple[int, float]] = []
    for epoch, factor in drops:
        at = round(epoch / length * epochs)
        if not 0 < at < epochs:
            continue
        if out and out[-1][0] == at:
            out[-1] = (at, out[-1][1] * factor)
        else:
            out.append((at, factor))
    return out


def step_schedule(learning_rate: float, epochs: int, steps_per_epoch: int, phase: tuple):
    """A Keras schedule (per optimizer step) for ``phase`` over ``epochs``, or the float when nothing drops."""
    drops = drop_epochs(epochs, phase)
    if not drops:
        return learning_rate
    values = [learning_rate]
    for _, factor in drops:
        values.append(values[-1] * factor)
    # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i]; epoch e starts at step e * steps_per_epoch
    boundaries = [at * steps_per_epoch - 1 for at, _ in drops]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
