"""Word lists for the simulator's synthetic sentences (``scripts/sim/content.py``). Synthetic, not data.

40 features x 40 scenes = 1,600 distinct Template 1 sentences per class: more than the paper's largest
K_y (800, Places-LT), so an extend loop can always reach its target.
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = (
    "a glossy dark coat", "bright striped markings", "a long curved tail", "large rounded ears",
    "a speckled pale surface", "sharp pointed edges", "a slender elongated body", "thick layered fur",
    "iridescent blue patches", "a short stubby shape", "deep red highlights", "a ringed pattern",
    "fine silky texture", "a broad flat head", "tiny clustered spots", "a smooth metallic sheen",
    "rough bark-like skin", "a bushy rounded crown", "bold black outlines", "soft faded colours",
    "a white chest patch", "wide webbed feet", "a narrow pointed snout", "mottled brown scales",
    "translucent thin wings", "a heavy sturdy frame", "curled spiral horns", "a pale yellow belly",
    "delicate fringed edges", "a shiny wet surface", "dense green foliage", "a checkered top",
    "an orange banded tail", "a hooked sharp beak", "velvety grey fur", "a symmetric star shape",
    "long thin legs", "a crested head", "a dotted golden rim", "a matte olive finish",
)

SCENES: tuple[str, ...] = (
    "a snowy pine forest", "a sunny meadow", "a muddy riverbank", "a crowded city street",
    "a quiet living room", "a rocky mountain slope", "a sandy beach at dusk", "a misty swamp",
    "a tropical rainforest", "a dry desert plain", "a fenced backyard", "a wooden workshop",
    "a frozen lake", "a busy market stall", "a dim cave entrance", "a rainy parking lot",
    "a flower garden", "a coral reef", "a farm field at dawn", "a museum display case",
    "a busy kitchen", "a shallow tidal pool", "an autumn park", "a savanna at noon",
    "a cluttered garage", "a school playground", "a mossy stone wall", "a lakeside dock",
    "an open grassland", "a foggy harbour", "a bamboo grove", "a warm greenhouse",
    "a snowy village", "a country road", "a small pet shop", "a riverside willow",
    "a zoo enclosure", "a bright photo studio", "a windy coastline", "a night-time campsite",
)

PATTERNS: tuple[str, ...] = (
    "speckled", "striped", "smooth", "mottled", "banded", "grainy", "glossy", "patchy",
)

# (name, r, g, b): the describe answer names the entry nearest the image's mean colour.
COLOURS: tuple[tuple[str, int, int, int], ...] = (
    ("black", 20, 20, 20), ("white", 235, 235, 235), ("grey", 128, 128, 128), ("red", 200, 40, 40),
    ("orange", 230, 130, 30), ("yellow", 225, 210, 50), ("green", 50, 160, 60), ("teal", 30, 140, 140),
    ("blue", 40, 70, 200), ("purple", 130, 50, 170), ("pink", 235, 140, 180), ("brown", 120, 75, 40),
    ("olive", 120, 120, 40), ("navy", 20, 30, 100), ("beige", 215, 195, 160), ("maroon", 110, 20, 40),
)
