"""The drift scenario suite: missions on the scripted model, drifted and healthy, measured.

`tasks/*.json` hold the scenarios as data; `suite` loads and runs them through the real stack
and computes the figures; `python -m tests.mission.drift` (or `make drift`) prints them.
"""
