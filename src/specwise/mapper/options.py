"""The map's command-line values, checked before anything loads."""

from __future__ import annotations

from specwise.drafters.factory import parse_drafter
from specwise.errors import SpecwiseError
from specwise.mapper.measures import SLO
from specwise.mapper.records import Load, MapConfig

POLICIES = ("plain", "fixed", "adaptive")


def parse_configs(text: str, drafter: str, k: int) -> list[MapConfig]:
    """'plain,fixed,adaptive,adaptive:eagle' -> configs; a policy without a drafter takes ``drafter``."""
    configs = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        policy, _, own = name.partition(":")
        if policy not in POLICIES:
            raise SpecwiseError(f"unknown config {name!r}: use plain, fixed or adaptive, optionally with a drafter (fixed:eagle)")
        if policy == "plain":
            if own:
                raise SpecwiseError(f"plain takes no drafter, got {name!r}")
            configs.append(MapConfig("plain", "plain"))
            continue
        parse_drafter(own or drafter)
        if (own or drafter) == "none":
            raise SpecwiseError(f"{name!r} drafts with 'none': use plain for no speculation")
        if not 1 <= k <= 32:
            raise SpecwiseError(f"-k must be in 1..32 for speculative configs, got {k}")
        configs.append(MapConfig(name, policy, own or drafter, k))
    if len({c.name for c in configs}) != len(configs):
        raise SpecwiseError(f"a config is named twice in {text!r}")
    if not any(not c.speculates for c in configs):
        raise SpecwiseError("--configs needs plain: every gain is measured against it")
    if len(configs) < 2:
        raise SpecwiseError("--configs needs plain and at least one speculative config")
    return configs


def parse_numbers(text: str, kind: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecwiseError(f"--{kind} takes comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise SpecwiseError(f"--{kind} values must be > 0, got {text!r}")
    if kind == "concurrency" and any(v != int(v) for v in values):
        raise SpecwiseError(f"--concurrency values must be whole numbers, got {text!r}")
    return values


def parse_loads(concurrency: str | None, rate: str | None, burstiness: float) -> list[Load]:
    if burstiness <= 0:
        raise SpecwiseError(f"--burstiness must be > 0, got {burstiness}")
    loads = [Load(concurrency=int(c)) for c in parse_numbers(concurrency, "concurrency")] if concurrency else []
    loads += [Load(rate=r, burstiness=burstiness) for r in parse_numbers(rate, "rate")] if rate else []
    return list(dict.fromkeys(loads))


def parse_slo(text: str | None) -> SLO:
    """'ttft=1.0,tpot=0.1,e2e=10' (seconds)."""
    if not text:
        return SLO()
    values: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in ("ttft", "tpot", "e2e"):
            raise SpecwiseError(f"unknown SLO {key!r} in --slo (use ttft=S, tpot=S, e2e=S)")
        try:
            values[f"{key}_s"] = float(value)
        except ValueError:
            raise SpecwiseError(f"--slo {key} needs seconds, got {value!r}") from None
        if values[f"{key}_s"] <= 0:
            raise SpecwiseError(f"--slo {key} must be > 0")
    return SLO(**values)
