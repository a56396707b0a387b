"""The batched functional core of :class:`maskgen.augment.RandomFaceMask` (kornia-style):
packing the one geometry (:mod:`.geometry`), rasterising it (:mod:`.raster`), painting it
(:mod:`.paint`) and giving it the photo's look (:mod:`.look`) for a whole batch on the
tensor's device."""

from maskgen.augment.functional.geometry import LAYERS, BatchGeometry, batch_geometry
from maskgen.augment.functional.look import apply_look, match_look_colours, measure_looks
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
    "apply_look",
    "batch_geometry",
    "face_lighting_batch",
    "mask_batch",
    "match_look_colours",
    "measure_looks",
    "offset_polygons",
    "rasterize_polygons",
    "soften_batch",
    "texture_fields",
]
