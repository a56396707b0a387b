"""Masked-face verification: protocols (NM-NM, M-NM, M-M), embeddings, metrics and reports.

A verification set holds 2N images and N same/different flags; pair ``k`` is images ``2k`` and
``2k + 1``. Two kinds of sets are read (:mod:`distill.eval.pairs`):

* insightface ``.bin`` packs (``lfw.bin``, ``agedb_30.bin`` …) through the safe loader
  :func:`maskgen.io.load_bin`;
* image folders with a pairs file (:func:`load_pairs`): the LFW ``pairs.txt`` format or a
  simple ``path_a path_b same`` list (MFR2-style sets).

Protocols (see ``docs/evaluation.md``):

* ``nm-nm``: no image masked;
* ``m-nm``: in **every** pair exactly the second image is masked, the first is clean
  (byte-identical to the NM-NM image);
* ``m-m``: both images of every pair are masked, each with its own independent draw.

Protocols, their draws and the protocol file live in :mod:`maskgen.protocol`, shared with
``maskgen render --protocol``: image ``i`` is drawn from (seed, ``f"{i:06d}"``) by
:func:`maskgen.seeding.draw_item`, written to a *protocol file* (:class:`EvalProtocol`), so
every model is scored on identical images and reusing the file reproduces them exactly.

Embeddings (:mod:`distill.eval.embed`) are flip-summed (``model(x) + model(flip(x))``) on
112×112 inputs (:mod:`distill.eval.inputs`) normalised to ``[-1, 1]``; metrics come from
:func:`distill.metrics.verification_report`. Pairs that cannot be scored (unreadable image, no
landmarks) are *skipped and reported*, never dropped silently: every result carries
``num_pairs_total``, ``num_pairs_scored`` and the skipped pair indices, metrics are computed
over the scored pairs, and ``accuracy_skipped_as_errors`` counts every skipped pair as a wrong
decision. :func:`evaluate_models` (:mod:`distill.eval.run`) drives it all and returns a
:class:`Report` (:mod:`distill.eval.report`); :func:`load_model` (:mod:`distill.eval.models`)
loads checkpoints.

Example:
    >>> parse_protocols("m-m, NM-NM")
    ('nm-nm', 'm-m')
    >>> draws = protocol_draws("m-nm", num_images=4, seed=0)
    >>> [d is None for d in draws]
    [True, False, True, False]
"""

from __future__ import annotations

from distill.eval.embed import embed_images
from distill.eval.models import CheckpointError, load_model
from distill.eval.pairs import PairsFileError, PairsSet, load_dataset, load_pairs
from distill.eval.report import EvalResult, Report
from distill.eval.run import evaluate_models
from maskgen.protocol import (
    PROTOCOLS,
    DatasetProtocol,
    EvalProtocol,
    ProtocolFileError,
    dataset_sha256,
    parse_protocols,
    protocol_draws,
)

__all__ = [
    "PROTOCOLS",
    "CheckpointError",
    "DatasetProtocol",
    "EvalProtocol",
    "EvalResult",
    "PairsFileError",
    "PairsSet",
    "ProtocolFileError",
    "Report",
    "dataset_sha256",
    "embed_images",
    "evaluate_models",
    "load_dataset",
    "load_model",
    "load_pairs",
    "parse_protocols",
    "protocol_draws",
]
