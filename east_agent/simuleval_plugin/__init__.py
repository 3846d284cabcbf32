"""SimulEval `--user-dir` plugin: computation-aware text latency and COMET.

    simuleval --user-dir "$(python -c 'import east_agent.simuleval_plugin as p, os;
        print(os.path.dirname(p.__file__))')" --latency-metrics AL LAAL AL_CA LAAL_CA ...

`east-simuleval` and `east-eval` load it by themselves. Importing it registers the
metrics AL_CA, LAAL_CA, AP_CA, DAL_CA (`east_agent.simuleval_glue.ca_latency`) and COMET
(`east_agent.simuleval_glue.comet_scorer`).
"""

import east_agent.simuleval_glue.ca_latency
import east_agent.simuleval_glue.comet_scorer

__all__ = ["east_agent"]
