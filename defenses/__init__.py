"""Defence adapters, one file each. Importing this package registers the built-ins.

A defence is ``fn(model, x, y, params, ctx) -> LossOut``: a pure loss function with a frozen
params dataclass and a registry name. It never touches the optimiser and never calls
``backward``; it leaves ``model.training`` as it found it. See ``defenses/README.md``.
"""

from defenses import awp, fr, mart, pgd_at, sar, standard, trades  # noqa: F401
