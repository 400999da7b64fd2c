"""`specwise map`: replay a workload against the engine or an OpenAI-compatible endpoint at several loads, measure, recommend, report."""
