"""The impact engine: which assets a vendor outage hits, how badly, why, and what the plan is.

    from inventory.impact import parse_scope, blast_radius
    scope = parse_scope(db, {"vendor": "CrowdStrike", "products": ["Falcon Sensor"],
                             "version": ">=7.11", "os": ["windows"]})
    result = blast_radius(db, scope)          # as_of=..., what_if=...
    result.totals, result.hits, result.to_dict()

Modules: ``scope`` (validation, versions), ``graph`` (the in-memory graph and
its cache), ``changes`` (keeping it current from the change log), ``snapshot``
(the graph on disk), ``engine`` (seeds, propagation, results), ``kernel`` /
``kernel_numpy`` / ``backend`` (the compiled loops, their NumPy formulation, and
which one answers), ``plans`` (applicable plans), ``confidence`` (data
freshness), ``whatif`` (hypothetical changes).  Importing this package does not
import Numba.
"""
from inventory.impact.engine import Hit, ImpactResult, blast_radius, propagate
from inventory.impact.graph import clear_cache, get_graph
from inventory.impact.scope import Scope, ScopeError, parse_scope

__all__ = ["Scope", "ScopeError", "parse_scope", "blast_radius", "ImpactResult", "Hit", "propagate",
           "get_graph", "clear_cache"]
