"""Rendering maths: the one camera (:mod:`.camera`, OpenCV convention, perspective or orthographic, OpenGL
converters, Fibonacci views), the differentiable mesh rasteriser (:mod:`.raster`: face index, barycentrics,
depth, normal and mask maps, silhouette anti-aliasing, back-projection) and shading (:mod:`.shading`:
spherical-harmonics light, textures, UV maps, one-call shaded renders)."""

from morphable.render.camera import (Camera, fibonacci_views, intrinsics_from_opengl_projection,
                                     opencv_from_opengl_pose, opengl_from_opencv_pose, opengl_projection)
from morphable.render.raster import (Rendering, antialias, backproject, depth_map, depth_point_cloud,
                                     edge_neighbours, interpolate, mask, normal_map, rasterize)
from morphable.render.shading import (render_shaded, sample_texture, sh_basis, sh_shading, shade,
                                      vertex_values_from_uv_map)

__all__ = ["Camera", "Rendering", "antialias", "backproject", "depth_map", "depth_point_cloud", "edge_neighbours",
           "fibonacci_views", "interpolate", "intrinsics_from_opengl_projection", "mask", "normal_map",
           "opencv_from_opengl_pose", "opengl_from_opencv_pose", "opengl_projection", "rasterize", "render_shaded",
           "sample_texture", "sh_basis", "sh_shading", "shade", "vertex_values_from_uv_map"]
