import math

import pytest

from fastnn.schedules import SCHEDULES, Constant, Cosine, Exponential, Step, Warmup, make_schedule


def test_exponential_matches_the_assignment_formula():
    schedule = Exponential(0.01, 0.1)
    assert schedule(0) == pytest.approx(0.01, rel=1e-15)
    assert schedule(1) == pytest.approx(0.01 * math.exp(-0.1), rel=1e-15)
    assert schedule(10) == pytest.approx(0.01 * math.exp(-1.0), rel=1e-15)


def test_constant_step_cosine():
    assert Constant(0.5)(7) == 0.5
    assert [Step(1.0, 2, 0.5)(t) for t in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cosine = Cosine(1.0, 10, min_lr=0.1)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(5) == pytest.approx(0.55)
    assert cosine(10) == pytest.approx(0.1) and cosine(12) == pytest.approx(0.1)


def test_warmup_ramps_then_hands_over():
    schedule = Warmup(Exponential(0.3, 0.5), epochs=2)
    assert [schedule(t) for t in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert schedule(3) == pytest.approx(0.3 * math.exp(-0.5))


def test_make_schedule_by_name():
    assert make_schedule("exp", 0.1, decay=0.2)(1) == pytest.approx(0.1 * math.exp(-0.2))
    assert make_schedule("none", 0.1)(9) == 0.1
    with pytest.raises(ValueError, match="unknown schedule 'linear'; choose one of none, exp, step, cosine"):
        make_schedule("linear", 0.1)


def test_every_registered_schedule_builds_by_its_name():
    built = {name: make_schedule(name, 0.1, decay=0.1, epochs=5, warmup=1) for name in SCHEDULES}
    assert {name: type(schedule.schedule) for name, schedule in built.items()} == SCHEDULES
    assert all(schedule(0) == pytest.approx(0.05) for schedule in built.values())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Constant(0.0), "learning rate must be a finite number > 0, got 0.0"),
        (lambda: Constant(float("nan")), "learning rate must be a finite number > 0, got nan"),
        (lambda: Exponential(0.1, -1), "decay rate k must be a finite number >= 0, got -1"),
        (lambda: Exponential(0.1, float("nan")), "decay rate k must be a finite number >= 0, got nan"),
        (lambda: Step(0.1, 0), "step size must be a whole number of epochs >= 1, got 0"),
        (lambda: Step(0.1, 2.5), "step size must be a whole number of epochs >= 1, got 2.5"),  # not silently 2
        (lambda: Cosine(1e-3, 4, min_lr=-1e-2), r"min_lr must be a number in \[0, lr=0.001\], got -0.01"),
    ],
)
def test_bad_values_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()
