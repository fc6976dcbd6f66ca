"""The registry of creativity dimensions: each dimension declared once, here; its scorers register from score.py.

A dimension gives crpo.py its --lambda-<name> (with the default weight) and --score-<name> flags, score.py its
--<name> flag and --dims choices, data.py the names of precomputed score columns. A new dimension is one
dimension(...) line below plus a scorer registered with @scorer in score.py (or in your own code, before the
parser is built).
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScorerArg:
    """The argument a scorer variant takes after its name (`--quality rm PATH`): what it is, and whether it may be
    left out (`--originality model [DIR]`: the shipped scorer when absent)."""
    name: str
    optional: bool = False

    def __str__(self):
        return f"[{self.name}]" if self.optional else self.name


@dataclass
class Dimension:
    """A creativity dimension: crpo.py's --lambda-<name> and --score-<name>, score.py's --<name> come from here.
    scorers: variant -> fn(groups, ctx) -> [raw np.ndarray per group]; arg: variant -> its ScorerArg (or None)."""
    name: str
    default_lambda: float
    help: str
    paper: bool = False  # one of the paper's four (score.py's default --dims)
    scorers: dict = field(default_factory=dict)
    arg: dict = field(default_factory=dict)
    default: str | None = None


DIMENSIONS = {}


def dimension(name, *, default_lambda=0.0, help="", paper=False):
    """Register a dimension (call once; then register its scorers with @scorer)."""
    DIMENSIONS[name] = Dimension(name, default_lambda, help, paper)
    return DIMENSIONS[name]


def scorer(dim, variant, *, default=False, arg=None):
    """Decorator: fn(groups, ctx) -> [raw np.ndarray per group] computes `dim` as `variant`. arg: the variant's
    ScorerArg (ScorerArg("PATH"), ScorerArg("DIR", optional=True)), written after it: `--quality rm PATH`."""
    def register(fn):
        d = DIMENSIONS[dim]
        d.scorers[variant], d.arg[variant] = fn, arg
        if default or d.default is None:
            d.default = variant
        return fn
    return register


def paper_dims():
    return [d for d, spec in DIMENSIONS.items() if spec.paper]


def parse_variant(dim, spec=None):
    """"judge" | "rm PATH" | ("rm", PATH) | None (the default) -> (variant, argument or None)."""
    d = DIMENSIONS[dim]
    parts = tuple(spec.split(None, 1) if isinstance(spec, str) else spec or (d.default,))
    variant, arg = parts[0], (parts[1] if len(parts) > 1 else None)
    need = d.arg.get(variant)
    if variant not in d.scorers or len(parts) > 2 or (arg is None and need and not need.optional) \
            or (arg is not None and not need):
        choices = ", ".join(v + (f" {d.arg[v]}" if d.arg[v] else "") for v in d.scorers)
        raise ValueError(f"{dim}: {' '.join(map(str, parts))!r} is not a scorer (choose from: {choices})")
    return variant, arg


# The dimensions: the paper's four, then ours.
dimension("novelty", default_lambda=1.0, paper=True, help="distance of the response's semantic spread from its group's")
dimension("diversity", default_lambda=1.0, paper=True, help="mean embedding distance to the group's other responses")
dimension("surprise", default_lambda=1.0, paper=True, help="how unexpected the response is given the prompt")
dimension("quality", default_lambda=0.0, paper=True, help="whether the response is a sensible answer")
dimension("originality", default_lambda=0.0, help="predicted human originality rating (learned from human ratings)")
dimension("relevance", default_lambda=0.0, help="probability that the response answers its prompt (score.py's gate)")
