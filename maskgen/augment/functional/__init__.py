"""The batched functional core of :class:`maskgen.augment.RandomFaceMask` (kornia-style):
packing the one geometry (:mod:`.geometry`), rasterising it (:mod:`.raster`) and painting it
(:mod:`.paint`) for a whole batch on the tensor's device."""

from maskgen.augment.functional.geometry import LAYERS, BatchGeometry, batch_geometry
from maskgen.augment.functional.paint import (
    CPU_CHUNK,
    face_lighting_batch,
    mask_batch,
    texture_fields,
)
from maskgen.augment.functional.raster import (
    AA_OFFSET,
    offset_polygons,
    rasterize_polygons,
    soften_batch,
)

__all__ = [
    "AA_OFFSET",
    "CPU_CHUNK",
    "LAYERS",
    "BatchGeometry",
    "batch_geometry",
    "face_lighting_batch",
    "mask_batch",
    "offset_polygons",
    "rasterize_polygons",
    "soften_batch",
    "texture_fields",
]
