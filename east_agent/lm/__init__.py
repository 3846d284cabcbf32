"""Models with a KV cache behind one protocol (`east_agent.lm.protocol`): `CachedLM`
(transformers' DynamicCache, any model, one stream) and `StaticLM` (Llama family, rows of
many streams in one forward); `build_lm` picks one."""

from east_agent.lm.build import KV_CACHES, build_lm, check_static
from east_agent.lm.dynamic import CachedLM, cache_argument_name, new_dynamic_cache
from east_agent.lm.protocol import LMBackend
from east_agent.lm.static import StaticLM

__all__ = [
    "KV_CACHES",
    "CachedLM",
    "LMBackend",
    "StaticLM",
    "build_lm",
    "cache_argument_name",
    "check_static",
    "new_dynamic_cache",
]
