"""Show that training learns: the paper's recipe over several seeds, judged on held-out drives.

The ablation (:mod:`training.experiments.ablation`) with its ``oe_depth`` row by default:
the same worlds, ``--seeds``, schedule (the config's whole schedule unless ``--steps``)
and evaluation. Every run is evaluated untrained (step 0) and trained on held-out
drives rendered from another world seed; ``proof.md`` and ``proof.json`` give the
held-out Abs Rel (median-scaled, KITTI protocol) of the untrained and the trained
network, mean and std over seeds, against the best constant depth (per image, the
constant that minimizes Abs Rel: an oracle no depth-blind predictor can beat), and
the ablation's full table of the rows trained. A work folder shared with the ablation
shares its runs.

    python -m training.experiments.prove_learning --work runs/proof --jobs 3
"""
from __future__ import annotations

import sys
from typing import Sequence

from .ablation import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("python -m training.experiments.prove_learning",
                          __doc__.splitlines()[0], rows=["oe_depth"])
    return run(parser.parse_args(argv), "proof")


if __name__ == "__main__":
    sys.exit(main())
