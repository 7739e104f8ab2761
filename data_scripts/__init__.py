"""Scripts that download, verify, extract and convert the public 3D anomaly datasets.

- :mod:`data_scripts.fetch`: ``download`` (resumable, verified), ``verify``, ``extract``.
- :mod:`data_scripts.datasets`: the registry of MVTec 3D-AD, Eyecandies, Real3D-AD and
  Anomaly-ShapeNet.
- ``python data_scripts/get_dataset.py NAME --out DIR``: all steps for one dataset.

Nothing here runs at import time or when pcad is used: downloads happen only when asked.
"""
