"""viz: plotly figures of clouds, defects and anomaly maps (offline HTML).

Example:
    >>> import numpy as np
    >>> from viz import cloud_figure
    >>> cloud_figure(np.eye(3)).data[0].type
    'scatter3d'
"""

from viz.clouds import cloud_figure, save_html

__all__ = ["cloud_figure", "save_html"]
