"""Rendering maths: the one camera (:mod:`.camera`, OpenCV convention, OpenGL converters, Fibonacci views)
and the mesh rasteriser (:mod:`.raster`: face index, barycentrics, depth, normal and mask maps,
back-projection) and the volume renderer of SDF fields (:mod:`.volume`: Laplace density, fast and
error-bounded samplers, normal / depth / opacity maps)."""

from morphable.render.camera import (Camera, fibonacci_views, intrinsics_from_opengl_projection,
                                     opencv_from_opengl_pose, opengl_from_opencv_pose, opengl_projection)
from morphable.render.raster import (Rendering, backproject, depth_map, depth_point_cloud, interpolate, mask,
                                     normal_map, rasterize)
from morphable.render.volume import (ErrorBoundedSampler, FastSampler, LaplaceDensity, VolumeRendering, camera_rays,
                                     laplace_density, render_rays, render_views)

__all__ = ["Camera", "ErrorBoundedSampler", "FastSampler", "LaplaceDensity", "Rendering", "VolumeRendering",
           "camera_rays", "laplace_density", "render_rays", "render_views", "backproject", "depth_map", "depth_point_cloud", "fibonacci_views",
           "interpolate", "intrinsics_from_opengl_projection", "mask", "normal_map", "opencv_from_opengl_pose",
           "opengl_from_opencv_pose", "opengl_projection", "rasterize"]
