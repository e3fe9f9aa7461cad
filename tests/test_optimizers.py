import numpy as np
import pytest

import keras_solov2


def test_warmup_step_schedule_values():
    schedule = keras_solov2.WarmupStepSchedule(
        base_learning_rate=0.01,
        milestones=(1000, 2000),
        warmup_steps=500,
        warmup_ratio=0.01,
    )
    values = [float(schedule(s)) for s in (0, 250, 500, 999, 1000, 1999, 2000)]
    expected = [1e-4, 0.01 * (0.01 + 0.99 * 0.5), 0.01, 0.01, 1e-3, 1e-3, 1e-4]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_official_recipe():
    optimizer, epochs = keras_solov2.solov2_optimizer(
        steps_per_epoch=100, schedule="3x"
    )
    assert epochs == 36
    assert optimizer.momentum == 0.9
    assert optimizer.weight_decay == pytest.approx(1e-4)
    assert optimizer.global_clipnorm == 35.0
    schedule = optimizer.get_config()["learning_rate"]["config"]
    assert tuple(schedule["milestones"]) == (2700, 3300)
    rebuilt = keras_solov2.WarmupStepSchedule(**schedule)
    assert float(rebuilt(10_000)) == pytest.approx(0.01 * 0.01)
    _, epochs_1x = keras_solov2.solov2_optimizer(steps_per_epoch=10, schedule="1x")
    assert epochs_1x == 12
    with pytest.raises(ValueError, match="schedule"):
        keras_solov2.solov2_optimizer(steps_per_epoch=10, schedule="2x")
