import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from wsi_synth.extraction.raster import ClassGeometries
from wsi_synth.extraction.split import assign_splits
from wsi_synth.extraction.tissue import box_fractions, tissue_mask


def test_rasterize_is_exact_at_pixel_centres_for_holes_islands_and_overlaps():
    ring = Polygon([(3, 3), (60, 5), (58, 61), (4, 57)], [[(20, 20), (40, 20), (40, 40), (20, 40)]])
    island = Polygon([(25, 25), (35.5, 25), (35, 35.2)])  # inside the hole
    multi = MultiPolygon([Polygon([(0, 0), (10, 0), (0, 10)]), Polygon([(50, 50), (64, 50), (64, 64)])])
    small_on_top = Polygon([(5, 5), (15, 5), (15, 15), (5, 15)])
    geoms = ClassGeometries.build([(1, ring), (2, island), (3, multi), (4, small_on_top)])
    l0_xy, l0_px, size = (-2.0, -1.0), 1.3, 52
    mask = geoms.rasterize(l0_xy, l0_px, size)
    ys, xs = np.mgrid[0:size, 0:size]
    cx, cy = l0_xy[0] + (xs + 0.5) * l0_px, l0_xy[1] + (ys + 0.5) * l0_px
    expected = np.zeros((size, size), np.uint8)
    for cid, g in sorted([(1, ring), (2, island), (3, multi), (4, small_on_top)], key=lambda t: -t[1].area):
        expected[shapely.contains_xy(g, cx, cy)] = cid
    assert (mask == expected).mean() > 0.99
    assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
    assert mask[int(30 / l0_px), int(31 / l0_px)] in (0, 2)  # in the hole: never class 1


def test_annotated_fractions_match_geometry():
    geoms = ClassGeometries.build([(1, Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]))])
    f = geoms.annotated_fractions(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float))
    assert np.allclose(f, [1.0, 0.5, 0.0])


def test_split_keeps_units_whole_and_covers_classes():
    units = {f"s{i}": ({1, 2} if i % 3 == 0 else {1}) for i in range(10)} | {"rare_a": {3}, "rare_b": {3}}
    splits = assign_splits(units, 0.25, seed=1)
    assert set(splits) == set(units) and set(splits.values()) == {"train", "test"}
    test = [u for u, s in splits.items() if s == "test"]
    assert len(test) == 3
    assert any(3 in units[u] for u in test) and any(2 in units[u] for u in test)
    assert splits == assign_splits(units, 0.25, seed=1)
    assert assign_splits({"only": {1}}, 0.5, seed=0) == {"only": "train"}


def test_tissue_mask_finds_stained_blob_and_box_fractions_match_brute_force():
    rng = np.random.default_rng(0)
    img = np.full((120, 160, 3), 240, np.uint8) + rng.integers(0, 6, (120, 160, 3), dtype=np.uint8)
    img[30:90, 40:120] = (180, 90, 160)  # pink-purple tissue
    mask = tissue_mask(img)
    assert mask[35:85, 45:115].all() and not mask[:20].any()
    boxes = np.array([[40, 30, 120, 90], [0, 0, 40, 30], [30, 20, 50, 40]])
    brute = [mask[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes]
    assert np.allclose(box_fractions(mask, boxes), brute)
