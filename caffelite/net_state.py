"""NetState filtering: which layers a net built for a phase, level and stages keeps."""

from __future__ import annotations

from caffelite.errors import CaffeliteError


def state_meets_rule(state, rule) -> bool:
    """Caffe's Net::StateMeetsRule: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer, state) -> bool:
    """Included when no rule is given, when an include rule is met, unless excluded."""
    if layer.include and layer.exclude:
        raise CaffeliteError(
            f"layer {layer.name!r} specifies both include and exclude rules; use one"
        )
    if layer.include:
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


def filter_net(param, state):
    """A copy of ``param`` with only the layers ``state`` includes."""
    filtered = type(param)()
    filtered.CopyFrom(param)
    del filtered.layer[:]
    filtered.layer.extend(layer for layer in param.layer if layer_included(layer, state))
    return filtered
