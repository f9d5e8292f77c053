"""Class maps ↔ QuPath GeoJSON: one MultiPolygon annotation per class, holes and islands kept.

Polygons follow pixel edges of the map they are traced from (rasterio's polygonize), scaled to level-0
coordinates by that map's downsample `f`. So the tolerance is exactly the map's pixel: a boundary is
where the `f`-times-reduced map puts it (at most `f`/2 level-0 px from the level-0 boundary), and
rasterizing the GeoJSON back at that resolution (pixel centres) reproduces the map exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsi_synth.errors import BadAnnotationError


def trace_classes(labels: np.ndarray, *, downsample: float) -> dict[int, list]:
    """The polygons of each non-zero class of an (H, W) uint8 map, as GeoJSON coordinate lists (exterior ring,
    then holes) in level-0 px, following the edges of the map's pixels (`downsample` level-0 px each)."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    polygons: dict[int, list] = {}
    for geometry, value in shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine(downsample, 0, 0, 0, downsample, 0)
    ):
        polygons.setdefault(int(value), []).append(geometry["coordinates"])
    return polygons


def mask_to_geojson(labels: np.ndarray, *, downsample: float, classes: Sequence[dict]) -> dict:
    """FeatureCollection of the non-zero classes of an (H, W) uint8 map whose pixels are `downsample` level-0 px."""
    by_id = {int(c["id"]): c for c in classes}
    polygons = trace_classes(labels, downsample=downsample)
    features = []
    for class_id in sorted(polygons):
        cls = by_id.get(class_id, {"name": f"class {class_id}", "color": [128, 128, 128]})
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "MultiPolygon", "coordinates": polygons[class_id]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": cls["name"], "color": list(cls["color"])},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def geojson_to_mask(doc: dict, shape: tuple[int, int], *, downsample: float, classes: Sequence[dict]) -> np.ndarray:
    """Rasterize a FeatureCollection at pixel centres into an (H, W) map of `downsample` level-0 px per pixel.

    Class names are looked up in `classes`; an unknown name is an error listing the known ones.
    """
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    ids = {c["name"].lower(): int(c["id"]) for c in classes}
    shapes = []
    for i, feature in enumerate(doc.get("features", [])):
        name = ((feature.get("properties") or {}).get("classification") or {}).get("name")
        if name is None:
            continue
        if name.lower() not in ids:
            raise BadAnnotationError(
                f"feature {i}: class {name!r} is not one of {', '.join(c['name'] for c in classes)}"
            )
        shapes.append((feature["geometry"], ids[name.lower()]))
    if not shapes:
        return np.zeros(shape, np.uint8)
    return rasterize(
        shapes, out_shape=shape, transform=Affine(downsample, 0, 0, 0, downsample, 0), fill=0, dtype="uint8"
    )
