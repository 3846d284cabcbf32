"""`python -m east_agent.bench`: `east-bench`."""

from east_agent.bench.cli import main

main()
