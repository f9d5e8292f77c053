"""Defaults shared by the CLI, the API and the run configurations, importable without numpy or torch (so `--help`
stays instant). One definition each: the configs, the click options and the API signatures all read them here."""

#: Class contours' wander (class probability), calibrated on the WSSS4LUAD masks: passed through the 8 px mask grid
#: and refined with it, their straight-boundary share is 0.96 % (0.91 % as drawn); 0 gives smooth contours
#: (4.4 %). docs/benchmarks.md, "Class boundaries".
BOUNDARY_ROUGHNESS = 0.1
#: How far the mask stage departs from the layout stage's slide-scale layout (SDEdit strength: the share of the mask
#: stage's steps run from the noised layout; 1 ignores the layout, 0 keeps it as it is). Chosen by measurement on
#: the bundled model: docs/benchmarks.md, "Layout stage".
LAYOUT_STRENGTH = 0.75
