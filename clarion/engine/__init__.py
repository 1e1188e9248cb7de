"""The rule engine (celery-beat scan rules and event rules) lands here with its own issue.

Rules will create notifications through the same ``create`` path producers use.
"""
