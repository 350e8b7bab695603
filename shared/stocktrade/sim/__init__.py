"""stocktrade.sim: the shared float64 trading kernels (numba), see :mod:`stocktrade.sim.kernels`."""
