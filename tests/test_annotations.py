import json
import logging

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from tests.conftest import shared
from wsi_synth.annotations import clip_to_slide, load_annotations, match_annotations
from wsi_synth.errors import BadAnnotationError


def test_qupath_json_and_aperio_xml_hold_the_same_region():
    folder = shared("annotations", "qupath_aperio_example")
    qupath = {a.name: a for a in load_annotations(folder / "TCGA-EJ-5519-01Z-00-DX1.json").annotations}
    aperio = load_annotations(folder / "TCGA-EJ-5519-01Z-00-DX1.xml")
    tumour_xml = next(a for a in aperio.annotations if a.name == "CaP")  # the class lives in an Attribute
    a, b = qupath["Tumor"].geometry, tumour_xml.geometry
    iou = a.intersection(b).area / a.union(b).area
    assert iou > 0.99
    assert aperio.unclassified == 2  # two layers without a name or attribute


def test_older_qupath_array_reads_colorRGB():
    anns = load_annotations(shared("annotations", "qupath_aperio_example", "TCGA-EJ-5519-01Z-00-DX1.json")).annotations
    tumour = next(a for a in anns if a.name == "Tumor")
    assert tumour.color == ((-3670016 >> 16) & 255, (-3670016 >> 8) & 255, -3670016 & 255)
    assert {a.geometry.geom_type for a in anns} == {"Polygon", "MultiPolygon"}


def test_feature_collection_with_multipolygon_holes_and_unclassified(cmu_geojson):
    result = load_annotations(cmu_geojson)
    assert {a.name for a in result.annotations} == {"Squamous epithelium", "Stroma"}
    assert result.unclassified == 1
    stroma = next(a for a in result.annotations if a.name == "Stroma")
    assert any(len(p.interiors) for p in stroma.geometry.geoms)


def test_dsa_json_is_read():
    result = load_annotations(
        shared("annotations", "bcss_histomicstk", "TCGA-A2-A0YE-01Z-00-DX1_GET_MergePolygons.svs_annotations.json")
    )
    assert {"mostly_tumor", "mostly_stroma"} <= {a.name for a in result.annotations}


def test_asap_xml(tmp_path):
    xml = """<ASAP_Annotations><Annotations>
      <Annotation Name="A" Type="Polygon" PartOfGroup="tumor" Color="#F4FA58"><Coordinates>
        <Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="100" Y="0"/><Coordinate Order="2" X="100" Y="50"/>
      </Coordinates></Annotation>
      <Annotation Name="B" Type="Dot" PartOfGroup="None"><Coordinates>
        <Coordinate Order="0" X="5" Y="5"/>
      </Coordinates></Annotation>
    </Annotations><AnnotationGroups>
      <Group Name="tumor" PartOfGroup="None" Color="#ff0000"/>
    </AnnotationGroups></ASAP_Annotations>"""
    path = tmp_path / "a.xml"
    path.write_text(xml)
    result = load_annotations(path)
    assert [(a.name, a.geometry.area, a.color) for a in result.annotations] == [("tumor", 2500.0, (255, 0, 0))]
    assert result.non_area == 1


def test_self_intersecting_polygon_is_repaired_with_a_warning(tmp_path, caplog):
    bowtie = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]},
        "properties": {"classification": {"name": "Tumor"}},
    }
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [bowtie]}))
    with caplog.at_level(logging.WARNING, logger="wsi_synth"):
        result = load_annotations(path)
    assert result.repaired == 1 and "Self-intersection" in caplog.text
    geom = result.annotations[0].geometry
    assert geom.is_valid and geom.area == pytest.approx(50.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("", "is empty"),
        ("<Foo/>", "unknown XML root"),
        ('{"type": "FeatureCollection", "features": []}', "no polygons"),
        ('{"a": 1}', "unrecognised JSON layout"),
    ],
)
def test_broken_annotation_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(BadAnnotationError, match=message):
        load_annotations(path)


def test_clip_warns_and_fully_outside_is_an_error(caplog):
    from wsi_synth.annotations import Annotation

    inside = Annotation("a", Polygon([(10, 10), (20, 10), (20, 20)]))
    partly = Annotation("b", Polygon([(90, 90), (110, 90), (110, 110), (90, 110)]))
    with caplog.at_level(logging.WARNING, logger="wsi_synth"):
        out = clip_to_slide([inside, partly], (100, 100), "s")
    assert out[0] is inside and out[1].geometry.area == pytest.approx(100) and "clipped" in caplog.text
    with pytest.raises(BadAnnotationError, match="entirely outside slide s"):
        clip_to_slide([Annotation("c", Polygon([(200, 200), (300, 200), (300, 300)]))], (100, 100), "s")


def _feature(name, slide=None):
    props = {"classification": {"name": name}}
    if slide:
        props["slide"] = slide
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 0]]]},
        "properties": props,
    }


def test_matching_by_stem_by_slide_property_and_errors(tmp_path):
    slides = [tmp_path / "A.svs", tmp_path / "B.svs"]
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "A.geojson").write_text(json.dumps([_feature("t")]))
    with pytest.raises(BadAnnotationError, match="B"):
        match_annotations(slides, folder)
    (folder / "B.xml").write_text(
        '<Annotations><Annotation Name="s"><Regions><Region><Vertices><Vertex X="0" Y="0"/>'
        '<Vertex X="5" Y="0"/><Vertex X="5" Y="5"/></Vertices></Region></Regions></Annotation></Annotations>'
    )
    matched = match_annotations(slides, folder)
    assert [a.name for a in matched[slides[1]][0].annotations] == ["s"]
    tagged = tmp_path / "all.geojson"
    tagged.write_text(
        json.dumps({"type": "FeatureCollection", "features": [_feature("t", "A.svs"), _feature("u", "B")]})
    )
    matched = match_annotations(slides, tagged)
    assert [a.name for a in matched[slides[0]][0].annotations] == ["t"]
    assert [a.name for a in matched[slides[1]][0].annotations] == ["u"]
    untagged = tmp_path / "one.geojson"
    untagged.write_text(json.dumps([_feature("t")]))
    with pytest.raises(BadAnnotationError, match="only one slide"):
        match_annotations(slides, untagged)


def test_aperio_negative_region_is_a_hole(tmp_path):
    path = tmp_path / "h.xml"
    region = '<Region NegativeROA="{neg}"><Vertices>{v}</Vertices></Region>'
    square = lambda a, b: "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in [(a, a), (b, a), (b, b), (a, b)])  # noqa: E731
    path.write_text(
        "<Annotations><Annotation "
        f'Name="t"><Regions>{region.format(neg=0, v=square(0, 10))}{region.format(neg=1, v=square(2, 4))}'
        "</Regions></Annotation></Annotations>"
    )
    geom = load_annotations(path).annotations[0].geometry
    assert geom.area == pytest.approx(96) and not shapely.contains_xy(geom, 3, 3) and shapely.contains_xy(geom, 8, 8)
    assert np.isclose(geom.area, 100 - 4)
