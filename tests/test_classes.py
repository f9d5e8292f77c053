import pytest

from wsi_synth.classes import load_class_map
from wsi_synth.errors import BadAnnotationError, BadArgumentError


def test_paper5_maps_common_names():
    m = load_class_map("paper5")
    assert m.names == ["unknown", "carcinoma", "necrosis", "tumour stroma", "others"]
    assert m.class_id("Tumor") == 1 and m.class_id("  STROMA ") == 3 and m.class_id("Necrosis") == 2


def test_unknown_name_lists_the_known_ones_unless_unmapped_is_set():
    with pytest.raises(BadAnnotationError, match="'Fat' is not in the class map.*carcinoma"):
        load_class_map("paper5").class_id("Fat")
    assert load_class_map("paper5", unmapped="others").class_id("Fat") == 4
    assert load_class_map("paper5", unmapped="ignore").class_id("Fat") is None


def test_default_is_one_class_per_annotation_name_with_file_colours():
    m = load_class_map(None, found_names=["Stroma", "Squamous epithelium"], found_colors={"Stroma": (1, 2, 3)})
    assert m.names == ["unknown", "Squamous epithelium", "Stroma"]
    assert m.classes[2].color == (1, 2, 3)


def test_yaml_class_map(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(
        "classes: [tumour, {name: stroma, color: [9, 9, 9]}]\nmap: {Tumor: tumour, 'Tumor stroma': stroma}\n"
    )
    m = load_class_map(path)
    assert m.class_id("tumor stroma") == 2 and m.class_id("Tumor") == 1 and m.classes[2].color == (9, 9, 9)
    path.write_text("classes: [tumour]\nmap: {Tumor: nonsense}\n")
    with pytest.raises(BadArgumentError, match="nonsense"):
        load_class_map(path)
