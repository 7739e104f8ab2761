"""Virtual structured-light sensor: camera, scene placement, shading and sample rendering."""

from synth.render.camera import Camera
from synth.render.render import RenderedSample, SensorConfig, render_defects, render_sample

__all__ = ["Camera", "RenderedSample", "SensorConfig", "render_defects", "render_sample"]
