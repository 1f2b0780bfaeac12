"""r53lb's benchmarks: `python -m bench` (the full run, writes docs/benchmarks.md) or `--smoke`.

Every comparison is a ratio measured in one run on one machine. Servers (the SMTP farm,
the moto server) run in their own processes so that they never share an event loop or a
CPU budget with the side being measured; each measured side runs in a fresh worker
process that times itself, so interpreter start-up is never part of a number.
"""
