"""Plumbing that the edge, the central, the speaker agent and the tools all need: YAML configs
whose errors name file, line and field (``yamlconfig``), one process-wide instance
(``once``), loopback port helpers (``net``). Nothing here knows about cameras or alarms."""
