"""Rendering maths: the one camera (:mod:`.camera`, OpenCV convention, perspective or orthographic, OpenGL
converters, Fibonacci views), the differentiable mesh rasteriser (:mod:`.raster`: face index, barycentrics,
depth, normal and mask maps, silhouette anti-aliasing, back-projection), shading (:mod:`.shading`:
spherical-harmonics light, textures, UV maps, one-call shaded renders) and the volume renderer of SDF fields
(:mod:`.volume`: Laplace density, fast and error-bounded samplers, normal / depth / opacity maps)."""

from morphable.render.camera import (Camera, fibonacci_views, intrinsics_from_opengl_projection,
                                     opencv_from_opengl_pose, opengl_from_opencv_pose, opengl_projection)
from morphable.render.raster import (Rendering, antialias, backproject, depth_map, depth_point_cloud,
                                     edge_neighbours, interpolate, mask, normal_map, rasterize)
from morphable.render.shading import (render_shaded, sample_texture, sh_basis, sh_shading, shade,
                                      vertex_values_from_uv_map)
from morphable.render.volume import (ErrorBoundedSampler, FastSampler, LaplaceDensity, VolumeRendering, camera_rays,
                                     laplace_density, render_rays, render_views)

__all__ = ["Camera", "ErrorBoundedSampler", "FastSampler", "LaplaceDensity", "Rendering", "VolumeRendering",
           "antialias", "backproject", "camera_rays", "depth_map", "depth_point_cloud", "edge_neighbours",
           "fibonacci_views", "interpolate", "intrinsics_from_opengl_projection", "laplace_density", "mask",
           "normal_map", "opencv_from_opengl_pose", "opengl_from_opencv_pose", "opengl_projection", "rasterize",
           "render_rays", "render_shaded", "render_views", "sample_texture", "sh_basis", "sh_shading", "shade",
           "vertex_values_from_uv_map"]
