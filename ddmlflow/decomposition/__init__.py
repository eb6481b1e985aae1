"""Cut images (H, W, C) and volumes (H, W, D, C) into subdomains (boxes).

Klawonn, Lanser & Weber (SISC 2024, sec. 3.1, Fig. 3) and Gu, Zhang, Liu & Cai
(ETNA 2022, sec. 2.1) train one small CNN per sub-image. A ``Decomposition`` is
just the list of boxes: half-open index ranges on the spatial axes (channels are
never cut). Boxes together cover every pixel and may overlap. Local networks see
``x[:, box]``, a numpy view, so the data set is stored once and sliced on the fly.

Kinds:
  * ``"A"``  p x p (2D) or p x p x q (3D) tiles grown by ``overlap`` (delta).
  * ``"B"``  the 3 x 3 tiles plus 4 strongly overlapping boxes on the grid corners.
  * ``"explicit"``  any list of boxes, e.g. from a JSON file.
"""

from .boxes import KINDS, Box, Decomposition
from .kinds import SPECS, canonical, check_spec, explicit, make, type_a, type_b

__all__ = ["KINDS", "SPECS", "Box", "Decomposition", "canonical", "check_spec", "explicit", "make", "type_a", "type_b"]
