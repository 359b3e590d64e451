"""AdamW goes on from its state_dict as if it had never stopped (Adam's and SGD's are tested with resume)."""

import numpy as np

from fastnn.optimizers import AdamW


def test_adamw_goes_on_from_its_state_dict(backend):
    rng = np.random.default_rng(0)
    grads = [backend.asarray(rng.normal(size=(3, 2)), "float64") for _ in range(5)]
    param = backend.asarray(rng.normal(size=(3, 2)), "float64")
    original = AdamW(0.1)
    for grad in grads[:2]:
        original.step([("w", param, grad)], 0.1)
    copy = AdamW(0.1)
    copy.load_state_dict(original.state_dict(), original.t)
    param_copy = backend.asarray(backend.to_numpy(param), "float64")
    for grad in grads[2:]:
        original.step([("w", param, grad)], 0.1)
        copy.step([("w", param_copy, grad)], 0.1)
    np.testing.assert_array_equal(backend.to_numpy(param), backend.to_numpy(param_copy))
    assert copy.t == 5
