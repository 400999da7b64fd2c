"""Built-in prompts for ``specwise generate`` with no prompt: a quick look at where
prompt lookup pays (copy-heavy tasks) and where it does not (open writing)."""

from specwise.prompts import Request

DEMO_PROMPTS = [
    Request(
        id="summarize",
        segment="summarization",
        prompt=(
            "Summarize the following text in two sentences.\n\n"
            "The James Webb Space Telescope is the largest optical telescope in space. Its high resolution and "
            "sensitivity allow it to view objects too old, distant, or faint for the Hubble Space Telescope. This "
            "enables investigations across many fields of astronomy and cosmology, such as observation of the first "
            "stars and the formation of the first galaxies, and detailed atmospheric characterization of potentially "
            "habitable exoplanets. The telescope was launched on 25 December 2021 on an Ariane 5 rocket from Kourou, "
            "French Guiana, and arrived at the Sun-Earth L2 Lagrange point in January 2022."
        ),
    ),
    Request(
        id="code-edit",
        segment="coding",
        prompt=(
            "Rename the function `area` to `rectangle_area` in this code and return the full code.\n\n"
            "def area(width, height):\n    return width * height\n\n\n"
            "def total_area(shapes):\n    total = 0\n    for w, h in shapes:\n        total += area(w, h)\n    return total\n"
        ),
    ),
    Request(id="explain", segment="qa", prompt="Explain why the sky is blue in a short paragraph."),
    Request(id="story", segment="writing", prompt="Write a four-line poem about autumn leaves."),
]
