"""Scorers: generation records in, score records out, cached per (generation key, scorer id).

Local-first (Perspective API stops serving at the end of 2026): `toxicity-linear` (the default offline toxicity model,
shipped with its weights in the alt-profanity-check package), `classifier` (any HF sequence classifier, for toxicity
or regard), `guard` (a local Llama-Guard-style model), and the offline heuristics `refusal` and `lexicon`.
Build one from its CLI form with `build_scorer("classifier:model=/path,task=toxicity")`; score a run with
`score_run(store, scorer)`. Importing this package registers every scorer; torch, transformers and scikit-learn
load only when a model-backed scorer first needs them.
"""

from valueharm.scoring import judge, perspective  # noqa: F401 (registers the judge and perspective scorers)
from valueharm.scoring.base import (
    FEEDS,
    SCORERS,
    Scorer,
    ScorerKind,
    ScorerSpec,
    applies_to,
    build_scorer,
    parse_scorer_spec,
    scorer_kind,
)
from valueharm.scoring.classifier import ClassifierScorer
from valueharm.scoring.echoes import is_format_echo
from valueharm.scoring.guard import GuardScorer
from valueharm.scoring.heuristics import LexiconScorer, RefusalScorer
from valueharm.scoring.run import ScoreSummary, score_run
from valueharm.scoring.toxicity_linear import LinearToxicityScorer

__all__ = [
    "FEEDS",
    "SCORERS",
    "ClassifierScorer",
    "GuardScorer",
    "LexiconScorer",
    "LinearToxicityScorer",
    "RefusalScorer",
    "ScoreSummary",
    "Scorer",
    "ScorerKind",
    "ScorerSpec",
    "applies_to",
    "build_scorer",
    "is_format_echo",
    "parse_scorer_spec",
    "score_run",
    "scorer_kind",
]
