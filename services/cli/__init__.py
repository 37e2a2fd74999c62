"""The ``splice`` command line.

OpenMP threads wait passively in every CLI process (the party processes it starts get the same,
services/cli/cluster.py): torch and LightGBM share one ``libgomp.so.1``, which reads the policy
once, when the first of them starts it. Busy-waiting threads collapse on a loaded machine (the
pooled LightGBM reference: one grid setting took 0.6-17 s spinning, 2-4 s passive, measured on
2 shared cores).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
