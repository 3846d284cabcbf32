"""EAST simultaneous translation: the streaming decoder and its SimulEval agents.

The SimulEval adapters live in `east_agent.agent` (and are not imported here, so that
`simuleval --agent east_agent/agent.py` registers exactly one agent).
"""

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder, Translation

__all__ = ["DecoderConfig", "EastStreamDecoder", "Translation"]
