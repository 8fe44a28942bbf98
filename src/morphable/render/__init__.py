"""Rendering maths: the one camera (:mod:`.camera`, OpenCV convention, OpenGL converters, Fibonacci views)
and the mesh rasteriser (:mod:`.raster`: face index, barycentrics, depth, normal and mask maps,
back-projection)."""

from morphable.render.camera import (Camera, fibonacci_views, intrinsics_from_opengl_projection,
                                     opencv_from_opengl_pose, opengl_from_opencv_pose, opengl_projection)
from morphable.render.raster import (Rendering, backproject, depth_map, depth_point_cloud, interpolate, mask,
                                     normal_map, rasterize)

__all__ = ["Camera", "Rendering", "backproject", "depth_map", "depth_point_cloud", "fibonacci_views",
           "interpolate", "intrinsics_from_opengl_projection", "mask", "normal_map", "opencv_from_opengl_pose",
           "opengl_from_opencv_pose", "opengl_projection", "rasterize"]
