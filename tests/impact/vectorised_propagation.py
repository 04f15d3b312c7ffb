"""The propagation rules written with NumPy, level-synchronously, as an oracle for the
compiled kernel: the production NumPy formulation (``inventory.impact.kernel_numpy``,
which answers while the compiled kernel loads), called on a view.  Both must give
identical arrays: statuses, hops, and the same explaining parent and edge for every hit."""
from __future__ import annotations

import numpy as np

from inventory.impact import kernel_numpy
from inventory.impact.engine import Propagation
from inventory.impact.graph import View


def propagate(view: View, seeds: np.ndarray, groups: bool = True) -> Propagation:
    status, dist, link = kernel_numpy.propagate_arrays(np.asarray(seeds, dtype=np.int64), *view.kernel_inputs(),
                                                       groups)
    return Propagation(status, dist, link[:, 0], link[:, 1])
