"""Recurrent cells, one file each, behind one contract (``streamrnn.cells.base``), and the readout.

A layer l maps its input x^l_t (the network input for l = 0, the output of
layer l-1 at the same step otherwise) and its own previous state to a new
state; ``CELLS`` maps each registered kind to its class.
"""

from .base import CELLS, Block, Cell, Layer, cell_config, cell_from_config, check_gain, check_layers, check_size
from .readout import Readout

# the registry: importing a cell's module registers its kind in CELLS
from .dense import Elman, Leaky  # noqa: E402
from .gru import GRU  # noqa: E402
from .lru import LRU  # noqa: E402

__all__ = ["CELLS", "Block", "Cell", "Layer", "Readout", *CELLS,
           "cell_config", "cell_from_config", "check_gain", "check_layers", "check_size"]
