"""specwise: a speculative-decoding inference engine."""

from specwise.api import LLM, Result, SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.prompts import Request
from specwise.sampling import SamplingParams

__all__ = ["LLM", "Request", "Result", "SamplingParams", "SpecwiseError", "SpeculativeConfig"]
